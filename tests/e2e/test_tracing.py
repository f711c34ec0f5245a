"""One connected trace per evaluation: the partner's span (this process, an in-memory exporter)
is the root; the gateway, rotator, dispatcher, metric scorer and aggregator (each exporting to
its own JSON-lines file) add gRPC server spans, Kafka consumer spans and MongoDB spans, every
one a descendant of that root."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from medbench_devstack.services import ServiceStack
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import Evaluation, eventually, load_pool
from tests.e2e.test_evaluation import BASELINE, QUESTIONS, ROWS

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@pytest.fixture(scope="module")
def stack(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, traces: Path
) -> Iterator[ServiceStack]:
    with running_stack(
        servers, tmp_path_factory, "trace", {"MEDBENCH_TRACING__FILE": str(traces)}
    ) as services:
        yield services


def spans_of(traces: Path, trace_id: str) -> list[dict[str, Any]]:
    found = []
    for path in traces.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["trace_id"] == trace_id:
                found.append(record)
    return found


async def test_an_evaluation_is_one_connected_trace(stack: ServiceStack, traces: Path) -> None:
    await load_pool(stack, ROWS, "trace-pool")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("partner").start_as_current_span("evaluation") as root:
        evaluation = Evaluation(stack, "trace-t", "trace-run", BASELINE, questions=QUESTIONS)
        await evaluation.create()
        for batch in evaluation.batches(await evaluation.prompts()):
            await evaluation.upload_batch(batch)
        await evaluation.wait_completed()
    trace_id = f"{root.get_span_context().trace_id:032x}"
    root_id = f"{root.get_span_context().span_id:016x}"
    assert [s.name for s in exporter.get_finished_spans()] == ["evaluation"]

    async def completion_reached_the_gateway() -> list[dict[str, Any]] | None:
        found = spans_of(traces, trace_id)
        done = any(
            s["service"] == "gateway"
            and s["kind"] == "CONSUMER"
            and "submission-completed" in s["name"]
            for s in found
        )
        return found if done else None

    found = await eventually(
        completion_reached_the_gateway, 60, "the completion's consumer span on the gateway"
    )
    services = {s["service"] for s in found}
    assert {"gateway", "rotator", "dispatcher", "metric_scorer", "aggregator"} <= services
    kinds = {(s["service"], s["kind"]) for s in found}
    assert ("gateway", "SERVER") in kinds and ("rotator", "SERVER") in kinds
    assert ("metric_scorer", "CONSUMER") in kinds and ("aggregator", "CONSUMER") in kinds
    assert any(s["name"].startswith("mongodb ") for s in found)
    names = {s["name"] for s in found}
    assert "/medbench.submission.v1.SubmissionService/UploadAnswers" in names
    assert "/medbench.taskpool.v1.TaskPoolService/AssignItems" in names
    # Connected: every span's parent is the partner's root or another span of the trace.
    ids = {s["span_id"] for s in found} | {root_id}
    orphans = [(s["service"], s["name"]) for s in found if s["parent_id"] not in ids]
    assert orphans == []
    tenant = {
        s["attributes"].get("medbench.tenant")
        for s in found
        if s["service"] == "gateway" and s["kind"] == "SERVER"
    }
    assert tenant == {"trace-t"}
