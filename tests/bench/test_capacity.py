"""The capacity model's arithmetic (pure and fast: hand-made rows, no stack)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.bench import capacity
from tests.bench.capacity import (
    COSTS,
    JUDGE_BENCH,
    TOKENS_PER_VERDICT,
    Line,
    Measurements,
    MissingMeasurement,
    Row,
    Scenario,
)
from tests.bench.results import Result, table

DAY = 86400


def row(figure: str, value: float, unit: str, bench: str = COSTS) -> Row:
    return Row(bench, figure, value, unit, "test")


def rows(**overrides: float) -> list[Row]:
    base = [
        row("items measured (upload)", 6000, "items"),
        row("items measured (api)", 6000, "items"),
        row("judged share of items (api)", 50.0, "%"),
        row("kafka events, response-recorded (upload)", 1.0, "events/1k items"),
        row("kafka bytes, response-recorded (upload)", 100.0, "KiB/1k items"),
        row("kafka events, response-recorded (api)", 10.0, "events/1k items"),
        row("kafka bytes, response-recorded (api)", 100.0, "KiB/1k items"),
        row("kafka events, judge-requested (api)", 5.0, "events/1k items"),
        row("kafka bytes, judge-requested (api)", 50.0, "KiB/1k items"),
        row("mongo writes, main.responses (api)", 2000.0, "writes/1k items"),
        row("mongo stored, main.responses (api)", 512.0, "KiB/1k items"),
        row("mongo writes, main.judgments (api)", 500.0, "writes/1k items"),
        row("mongo stored, main.uploads (upload)", 1024.0, "KiB/1k items"),
        row("cpu, metric_scorer (upload)", 0.05, "CPU-s/1k items"),
        row("cpu, metric_scorer (api)", 0.05, "CPU-s/1k items"),
        row("cpu, judge_scorer (api)", 1.0, "CPU-s/1k items"),
        row("cpu, mongo (api)", 3.0, "CPU-s/1k items"),
        row("kafka consumer per partition (fetch + decode)", 1.0, "MB/s"),
        row("bank stored, main.tasks", 1024.0, "KiB/1k bank items"),
        row(TOKENS_PER_VERDICT, 1000.0, "tokens", bench=JUDGE_BENCH),
    ]
    return [
        Row(r.bench, r.figure, overrides.get(r.figure, r.value), r.unit, r.source) for r in base
    ]


# 1,000 submissions x 864 items over 10 days: 1 item/s on average, half in each mode.
SCENARIO = Scenario(
    institutions=100,
    submissions_per_cycle=1000,
    bank_items=1000,
    cycle_days=10,
    peak_factor=10,
    api_share=0.5,
    items_per_submission=864,
    judged_share=0.25,
    judge_tokens_per_s=100,
    target_utilisation=0.5,
)


def outputs(lines: list[Line]) -> dict[str, Line]:
    return {f"{line.section}: {line.name}": line for line in lines}


def test_loads_are_measured_costs_times_the_scenarios_items() -> None:
    out = outputs(capacity.model(Measurements(rows()), SCENARIO))
    assert out["scenario: items/s (peak = mean x peak factor)"].value == pytest.approx(1.0)
    # 0.5 items/s per mode: upload 1 event per 1,000 items, API 10.
    recorded = out["kafka: response-recorded: events/s"]
    assert recorded.value == pytest.approx(0.5 * 1 / 1000 + 0.5 * 10 / 1000)
    assert recorded.peak == pytest.approx(10 * recorded.value)
    # Judge costs follow judged items (0.25 items/s of both modes) at the API run's cost per
    # judged item (5 events per 1,000 items, half of them judged: 10 per 1,000 judged items).
    assert out["kafka: judge-requested: events/s"].value == pytest.approx(0.25 * 10 / 1000)
    assert out["mongo: main.judgments: writes/s"].value == pytest.approx(0.25 * 1.0)
    assert out["mongo: main.responses: writes/s"].value == pytest.approx(0.5 * 2.0)
    # Storage per cycle: 432,000 items per mode x KiB per 1,000 items.
    assert out["mongo: main.responses: stored per cycle"].value == pytest.approx(
        432_000 * 512 / 1000 / 2**20
    )
    assert out["mongo: main.uploads: stored per cycle"].value == pytest.approx(
        432_000 * 1024 / 1000 / 2**20
    )
    assert out["mongo: task bank: stored once (not per cycle)"].value == (
        pytest.approx(1024 / 2**20)
    )
    # Judge: 216,000 verdicts per cycle of 10 days x 1,000 tokens.
    assert out["judge: judge tokens per day"].value == pytest.approx(21_600 * 1000)
    tokens = out["judge: judge tokens/s"]
    assert tokens.value == pytest.approx(250) and tokens.peak == pytest.approx(2500)
    # 2,500 tokens/s at peak / (100 tokens/s per replica x 50%) = 50 replicas of 4 GPUs.
    assert out["judge: 72B judge GPUs, sized at the peak hour (50 replicas)"].value == 200
    assert out["judge: 72B judge GPUs, sized at the daily mean (5 replicas)"].value == 20


def test_a_doubled_scenario_doubles_every_load() -> None:
    measured = Measurements(rows())
    once = outputs(capacity.model(measured, SCENARIO))
    twice = outputs(capacity.model(measured, SCENARIO.scaled(2)))
    loads = [k for k, line in once.items() if line.unit in ("events/s", "writes/s", "GiB")]
    loads += ["judge: judge tokens per day", "judge: judge tokens/s", "scenario: items per cycle"]
    assert len(loads) > 8
    for key in loads:
        assert twice[key].value == pytest.approx(2 * once[key].value), key
        if once[key].peak is not None:
            assert twice[key].peak == pytest.approx(2 * once[key].peak), key  # type: ignore[operator]


def test_replicas_and_partitions() -> None:
    scenario = Scenario(
        submissions_per_cycle=1000,
        cycle_days=10,
        peak_factor=10,
        items_per_submission=864 * 1000,  # 1,000 items/s on average, 10,000 at peak
        judged_share=0.25,
        target_utilisation=0.5,
        min_replicas=2,
    )
    out = outputs(capacity.model(Measurements(rows()), scenario))
    # judge_scorer: 2,500 judged items/s at peak x 2 CPU-s per 1,000 judged items = 5 cores.
    judge = next(v for k, v in out.items() if k.startswith("replicas: judge_scorer"))
    assert judge.value == 10
    # metric_scorer: 10,000 items/s x 0.05 CPU-s per 1,000 = 0.5 cores: the floor of 2.
    metric = next(v for k, v in out.items() if k.startswith("replicas: metric_scorer"))
    assert metric.value == 2
    # response-recorded: 10,000 items/s x 100 KiB per 1,000 = 1,024,000 B/s over 0.5 MB/s.
    parts = next(v for k, v in out.items() if k.startswith("kafka: response-recorded: part"))
    assert parts.value == 3
    # judge-requested by throughput needs 2 partitions, its consumer's 10 replicas win.
    judged = next(v for k, v in out.items() if k.startswith("kafka: judge-requested: part"))
    assert judged.value == 10
    # The datastores get cores, not replicas.
    assert not any(k.startswith("replicas: mongo") for k in out)
    assert out["cpu: mongo: cores (local stand-in; an upper bound)"].value == pytest.approx(1.5)


def test_every_output_names_the_measured_rows_it_comes_from() -> None:
    for line in capacity.model(Measurements(rows()), SCENARIO):
        if line.section in ("kafka", "replicas", "cpu") or line.unit == "tokens/day":
            assert f"[{COSTS}: " in line.source or f"[{JUDGE_BENCH}: " in line.source, line
    gpus = [line for line in capacity.model(Measurements(rows()), SCENARIO) if line.unit == "GPUs"]
    assert gpus and all("assumed 100 tokens/s per 4-GPU replica" in g.source for g in gpus)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (TOKENS_PER_VERDICT, f"'{JUDGE_BENCH} | {TOKENS_PER_VERDICT}'"),
        ("items measured (upload)", f"'{COSTS} | items measured (upload)'"),
        ("judged share of items (api)", "bench_costs"),
        ("kafka consumer per partition (fetch + decode)", "make bench"),
    ],
)
def test_a_missing_measurement_is_named(missing: str, named: str) -> None:
    measured = Measurements(r for r in rows() if r.figure != missing)
    with pytest.raises(MissingMeasurement) as err:
        capacity.model(measured, SCENARIO)
    assert named in str(err.value)


def test_no_results_at_all_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = capacity.main(
        ["--results", str(tmp_path / "none.jsonl"), "--table", str(tmp_path / "x")]
    )
    assert code == 1
    assert "no benchmark results at all" in capsys.readouterr().err


def test_the_readme_table_is_read_when_there_is_no_results_file(tmp_path: Path) -> None:
    results = [
        Result(r.bench, r.figure, r.value, r.unit, None, True, "test", time.time()) for r in rows()
    ]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{table(results)}\n", encoding="utf-8")
    measured = capacity.load(tmp_path / "absent.jsonl", [readme])
    assert measured.get(COSTS, "mongo writes, main.responses (api)").value == 2000
    assert measured.get(JUDGE_BENCH, TOKENS_PER_VERDICT).unit == "tokens"
    assert measured.sources == [str(readme)]
    once = outputs(capacity.model(measured, SCENARIO))
    assert once["judge: judge tokens per day"].value == pytest.approx(21_600 * 1000)


def test_pool_size_and_judged_share_come_from_the_registry() -> None:
    items, share, note = capacity.registry_pool({"llm": 1.0})
    # 36 datasets: 30 lines each, 150 for the four shuffled MCQ sets, MedRxCheck 210.
    assert items == 1620 and share == pytest.approx(870 / 1620)
    assert "llm" in note
    mixed, _, _ = capacity.registry_pool({"llm": 1.0, "agent": 1.0})
    assert mixed == pytest.approx((1620 + 420) / 2)
