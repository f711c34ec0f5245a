"""A real Prometheus server (Debian's package, unpacked into .tools/bin by `make chart-tools`)
scrapes the six services through one evaluation; the series and labels the alerts and the
dashboard rely on exist, and no label carries a per-item or per-submission value."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medbench_devstack.ports import free_port
from medbench_devstack.services import ServiceStack
from tests.charts.test_chart import _tool
from tests.e2e.harness import Evaluation, eventually, load_pool
from tests.e2e.test_evaluation import BASELINE, QUESTIONS, ROWS

pytestmark = [pytest.mark.e2e]

TENANT = "prom-hospital"


@pytest.fixture(scope="module")
def prometheus(stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _tool("prometheus")
    folder: Path = tmp_path_factory.mktemp("prometheus")
    targets = [
        {
            "targets": [f"127.0.0.1:{stack.metrics_port(name)}"],
            "labels": {"component": name},
        }
        for name in stack.names
    ]
    (folder / "targets.json").write_text(json.dumps(targets))
    # /metrics answers only the stack's bearer token: Prometheus sends it as the chart's
    # ServiceMonitors do (authorization credentials), and a job without it sees 401.
    (folder / "metrics.token").write_text(stack.metrics_token)
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: medbench\n"
        "    authorization: {type: Bearer, credentials_file: metrics.token}\n"
        "    file_sd_configs: [{files: [targets.json]}]\n"
        "  - job_name: no-token\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{stack.metrics_port('gateway')}']}}]\n"
    )
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


async def test_prometheus_scrapes_the_series_the_alerts_and_dashboard_use(
    stack: ServiceStack, prometheus: str
) -> None:
    await load_pool(stack, ROWS, "prom-pool")
    evaluation = Evaluation(stack, TENANT, "prom-run", BASELINE, questions=QUESTIONS)
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    await evaluation.wait_completed()

    async def all_up() -> bool:
        result = api(prometheus, "/api/v1/query", query='up{job="medbench"} == 1')["result"]
        return {r["metric"]["component"] for r in result} == set(stack.names)

    await eventually(all_up, 60, "Prometheus to scrape all six services", interval_s=0.5)

    async def refused_without_token() -> bool:
        targets = api(prometheus, "/api/v1/targets")["activeTargets"]
        plain = [t for t in targets if t["labels"]["job"] == "no-token"]
        return bool(plain) and plain[0]["health"] == "down" and "401" in plain[0]["lastError"]

    await eventually(refused_without_token, 30, "the scrape without the token to see 401")
    wanted = {
        "partner RPCs by tenant": 'medbench_grpc_tenant_calls_total{component="gateway",'
        f'medbench_service="gateway",tenant="{TENANT}",code="OK"}}',
        "RPCs by method": 'medbench_grpc_server_handled_total{component="gateway",'
        'medbench_service="gateway",code="OK",method=~".*/CreateSubmission"}',
        "RPC latency": 'medbench_grpc_server_handling_seconds_bucket{component="rotator"}',
        "submissions by tenant": f'medbench_submissions_created_total{{tenant="{TENANT}",'
        'mode="upload",track="llm"}',
        "finished by state": f'medbench_submissions_finished_total{{tenant="{TENANT}",'
        'state="COMPLETED"}',
        "answers by tenant": f'medbench_answers_uploaded_total{{tenant="{TENANT}"}}',
        "Kafka handling": 'medbench_kafka_consumed_total{component="metric_scorer",outcome="ok"}',
        "Kafka latency": 'medbench_kafka_handle_seconds_bucket{component="aggregator"}',
        "consumer lag": 'medbench_kafka_consumer_lag{component="aggregator"}',
        "outbox backlog": 'medbench_outbox_backlog{component="gateway"}',
        "reports": 'medbench_aggregator_reports_total{component="aggregator"}',
        "items answered": f'medbench_items_total{{component="gateway",stage="answered",'
        f'tenant="{TENANT}",track="llm"}}',
        "items scored": f'medbench_items_total{{component="metric_scorer",stage="scored",'
        f'tenant="{TENANT}",track="llm"}}',
        "submissions by state": 'medbench_submissions{component="gateway",state="COMPLETED"}',
        "time from last answer to report": 'medbench_report_seconds_bucket{component="gateway",'
        'mode="upload",le="3600.0"}',
    }
    missing = dict(wanted)

    async def scraped() -> bool:
        for name, selector in list(missing.items()):
            if api(prometheus, "/api/v1/series", **{"match[]": selector}):
                del missing[name]
        return not missing

    try:
        await eventually(scraped, 60, "every wanted series", interval_s=0.5)
    finally:
        assert missing == {}
    # Label sets are bounded: nothing is labelled per item, submission, key or request.
    labels = set(api(prometheus, "/api/v1/labels"))
    assert {"tenant", "method", "code", "topic", "group"} <= labels
    assert labels.isdisjoint({"submission_id", "item_id", "key_id", "request_id", "batch_id"})
    # Our own label names the exporting service; `service` is left to the ServiceMonitor (which
    # would rename a clashing one to `exported_service`).
    assert "medbench_service" in labels and labels.isdisjoint({"service", "exported_service"})
    names = api(prometheus, "/api/v1/label/__name__/values")
    assert not [n for n in names if n.startswith("medbench_") and n.endswith("_created")]
    # Tenants label only the counters that opted in, never the per-method RPC counter.
    tenanted = 'medbench_grpc_server_handled_total{tenant!=""}'
    per_method = api(prometheus, "/api/v1/series", **{"match[]": tenanted})
    assert per_method == []
    tenants = set(api(prometheus, "/api/v1/label/tenant/values"))
    assert TENANT in tenants and all(not t.startswith("sub_") for t in tenants)
