"""Partial reports: a report that misses datasets of its track says so, and a board never ranks
it beside complete ones (core arithmetic, intervals, use cases over in-memory ports)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.core.board import board_order, select
from aggregator.core.report import ScoredItem, build_report, coverage_gaps
from aggregator.core.uncertainty import Unit, bootstrap_report
from aggregator.entrypoints import convert
from aggregator.usecases.aggregation import Aggregation
from aggregator.usecases.leaderboards import Leaderboards
from aggregator.usecases.reports import Reports, live_report
from medbench.common.v1 import common_pb2
from medbench.scoring.v1 import scoring_events_pb2 as ev
from medbench.taskpool.v1 import taskpool_pb2
from tests.services.aggregator.fakes import InMemoryLeaderboard, InMemoryScores
from tests.services.aggregator.test_usecases import publication

REGISTRY = (
    Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/registry/medbench_v4.json"
)
AGENT = {
    d["name"]: d["dimension"]
    for d in json.loads(REGISTRY.read_text(encoding="utf-8"))["datasets"]
    if d["track"] == "agent"
}
# One dataset of each of four agent dimensions, scored as in the issue: 82.14 over 4 of 6.
PRESENT = {"MedDecomp": 0.90, "MedRetAPI": 0.80, "MedIntentID": 0.75, "MedLongQA": 0.8356}


def items(scores: dict[str, float], per_dataset: int = 1) -> list[ScoredItem]:
    return [
        ScoredItem(f"{name}-{n}", name, AGENT[name], f"{name}-{n}", score)
        for name, score in scores.items()
        for n in range(per_dataset)
    ]


# -- core: the report ---------------------------------------------------------------------------


def test_four_of_six_dimensions_is_a_partial_report_that_names_what_it_misses() -> None:
    assert len(AGENT) == 14 and len(set(AGENT.values())) == 6
    report = build_report(items(PRESENT), coverage=AGENT)
    assert f"{report.overall:.2f}" == "82.14"  # the mean of the 4 dimensions present
    assert report.partial
    assert report.missing_dimensions == ("agent_safety_compliance", "multi_agent_collaboration")
    assert report.missing_datasets == tuple(sorted(set(AGENT) - set(PRESENT)))
    assert len(report.missing_datasets) == 10
    # The numbers of what is present do not change: a missing dataset is not a zero.
    assert build_report(items(PRESENT)).dimensions == report.dimensions
    zeros = build_report(items({**PRESENT, **dict.fromkeys(set(AGENT) - set(PRESENT), 0.0)}))
    assert zeros.overall < report.overall


def test_a_report_of_every_dataset_of_the_track_is_complete() -> None:
    report = build_report(items(dict.fromkeys(AGENT, 0.5)), coverage=AGENT)
    assert not report.partial and report.missing_datasets == report.missing_dimensions == ()
    assert report.overall == pytest.approx(50.0)


def test_a_missing_dataset_of_a_present_dimension_is_partial_with_every_dimension_present() -> None:
    scores = dict.fromkeys(AGENT, 1.0)
    del scores["MedCOT"]  # task_planning keeps MedDecomp, MedPathPlan and MedReflect
    report = build_report(items(scores), coverage=AGENT)
    assert report.partial and report.missing_datasets == ("MedCOT",)
    assert report.missing_dimensions == ()
    planning = next(d for d in report.dimensions if d.dimension == "task_planning")
    assert (planning.score, planning.n_datasets) == (100.0, 3)


def test_without_a_coverage_nothing_is_checked_and_unknown_datasets_change_nothing() -> None:
    assert not build_report(items(PRESENT)).partial
    assert not build_report(items(PRESENT), coverage={}).partial
    # A scored dataset the coverage does not name (another registry version's) is not missing.
    extra = [*items(dict.fromkeys(AGENT, 1.0)), ScoredItem("x", "Elsewhere", "other", "x", 1.0)]
    report = build_report(extra, coverage=AGENT)
    assert not report.partial and "other" in {d.dimension for d in report.dimensions}


def test_coverage_gaps_are_sorted_and_name_each_dimension_once() -> None:
    present = build_report(items({"MedIntentID": 1.0})).datasets
    datasets, dimensions = coverage_gaps(present, AGENT)
    assert list(datasets) == sorted(datasets) and "MedIntentID" not in datasets
    assert "MedRoleAdapt" in datasets  # the other dataset of the dimension present
    assert dimensions == tuple(sorted(set(AGENT.values()) - {"scenario_interaction"}))


# -- core: intervals ----------------------------------------------------------------------------


def test_a_partial_reports_intervals_are_those_of_the_dimensions_present() -> None:
    scored = items({name: 0.5 for name in PRESENT}, per_dataset=1)
    units = [
        Unit(i.dataset, i.dimension, float(n % 2))
        for i in scored
        for n in range(40)  # 40 units per dataset, half right
    ]
    intervals = bootstrap_report(units)
    report = build_report(
        [
            ScoredItem(f"{u.dataset}-{n}", u.dataset, u.dimension, f"{u.dataset}-{n}", u.score)
            for n, u in enumerate(units)
        ],
        coverage=AGENT,
    )
    assert report.partial
    # The point estimate is the partial report's overall, inside its interval; the interval
    # spans the dimensions present only (a missing dimension is no zero in the resamples).
    assert intervals.overall.score == pytest.approx(report.overall) == pytest.approx(50.0)
    assert intervals.overall.low < report.overall < intervals.overall.high
    assert set(intervals.dimensions) == {d.dimension for d in report.dimensions}
    assert not set(intervals.dimensions) & set(report.missing_dimensions)
    with_zeros = bootstrap_report(
        [*units, *(Unit(n, AGENT[n], 0.0) for n in AGENT if n not in PRESENT for _ in range(40))]
    )
    assert with_zeros.overall.high < intervals.overall.low


# -- use cases: aggregation and reports ---------------------------------------------------------


def agent_score(item_id: str, dataset: str, value: float, **extra: Any) -> ev.ItemScore:
    component = extra.pop("component", "metric")
    return ev.ItemScore(
        item_id=item_id,
        dataset=dataset,
        dimension=AGENT[dataset],
        group_id=item_id,
        component=component,
        metric=component,
        score=value,
        components=[ev.ComponentScore(name=component, score=value)],
        **extra,
    )


def agent_batch(
    submission_id: str, *scores: ev.ItemScore, coverage: dict[str, str] | None = None
) -> ev.ItemsScored:
    component = scores[0].component
    return ev.ItemsScored(
        event_id=f"{submission_id}:b1:{component}",
        batch_id="b1",
        scores=scores,
        scorer_version=f"{component}-scorer/1",
        context=ev.ScoringContext(
            submission_id=submission_id,
            tenant_id="hospital-a",
            pool_id="agent-pool",
            expected_items=len({s.item_id for s in scores}),
            dataset_rules={s.dataset: "mean" for s in scores},
            coverage=AGENT if coverage is None else coverage,
        ),
    )


async def record(store: InMemoryScores, *events: ev.ItemsScored) -> None:
    for event in events:
        await Aggregation(store).record(convert.batch_from_proto(event))


async def test_the_stored_report_and_its_proto_carry_the_mark() -> None:
    store = InMemoryScores()
    scores = [agent_score(f"{name}-1", name, value) for name, value in PRESENT.items()]
    await record(store, agent_batch("sub-p", *scores))
    doc = store.reports["sub-p"]
    assert f"{doc['overall']:.2f}" == "82.14" and doc["partial"] is True
    assert doc["missing_dimensions"] == ["agent_safety_compliance", "multi_agent_collaboration"]
    assert len(doc["missing_datasets"]) == 10
    assert store.progress_records["sub-p"]["coverage"] == sorted(map(list, AGENT.items()))
    found = await Reports(store).report("sub-p", "hospital-a", exact=True)
    proto = convert.report_to_proto(found.record)
    assert proto.partial and list(proto.missing_dimensions) == doc["missing_dimensions"]
    assert list(proto.missing_datasets) == doc["missing_datasets"]
    assert proto.overall == doc["overall"]


async def test_a_dataset_whose_judge_scored_nothing_is_missing() -> None:
    """Every dataset of the track is in the pool, but the one judge-only dataset of a dimension
    has only unreadable verdicts: that dimension has no scored item."""
    store = InMemoryScores()
    metric = [agent_score(f"{n}-1", n, 1.0) for n in AGENT if n != "MedCollab"]
    failed = agent_score("MedCollab-1", "MedCollab", 0.0, component="judge", unscored=True)
    await record(store, agent_batch("sub-j", *metric, failed))
    doc = store.reports["sub-j"]
    assert doc["partial"] and doc["missing_datasets"] == ["MedCollab"]
    assert doc["missing_dimensions"] == ["multi_agent_collaboration"]
    assert doc["overall"] == 100.0 and doc["scored_items"] == 14


async def test_a_complete_report_and_a_pool_without_coverage_are_not_partial() -> None:
    store = InMemoryScores()
    every = [agent_score(f"{n}-1", n, 0.5) for n in AGENT]
    await record(store, agent_batch("sub-c", *every))
    few = [agent_score(f"{n}-1", n, 0.5) for n in PRESENT]
    await record(store, agent_batch("sub-old", *few, coverage={}))  # a pool from before
    for sid in ("sub-c", "sub-old"):
        doc = store.reports[sid]
        assert doc["partial"] is False and doc["missing_datasets"] == []
        assert not convert.report_to_proto(doc).partial
    # A report stored before the mark existed reads as not partial.
    old = {k: v for k, v in store.reports["sub-old"].items() if k != "partial"}
    assert not convert.report_to_proto(old).partial


# -- leaderboards ---------------------------------------------------------------------------------


def entry(sid: str, overall: float, partial: bool = False, **more: Any) -> dict[str, Any]:
    return {
        "_id": sid, "tenant_id": more.pop("tenant", f"t-{sid}"), "model_name": sid,
        "model_version": "1", "organisation": "", "open_source": False, "parameter_count": "",
        "cycle": "c1", "pool_id": "p", "overall": overall, "overall_low": overall - 2,
        "overall_high": overall + 2, "published": True, "track": common_pb2.TRACK_AGENT,
        "board": taskpool_pb2.BOARD_UPLOAD, "dimensions": [],
        "published_at": more.pop("at", datetime(2026, 12, 1, tzinfo=UTC)),
        **({"partial": True, "missing_dimensions": ["tool_use"],
            "missing_datasets": ["MedCallAPI"]} if partial else {}),
        **more,
    }  # fmt: skip


async def test_a_partial_entry_with_the_highest_overall_is_listed_after_every_complete_one() -> (
    None
):
    board = InMemoryLeaderboard()
    for e in (
        entry("top-partial", 99.0, partial=True),
        entry("a", 80.0),
        entry("b", 79.0),  # overlaps a: shares its rank
        entry("c", 40.0),
        entry("low-partial", 10.0, partial=True),
    ):
        await board.put(e)
    boards = Leaderboards(InMemoryScores(), board)
    agent, upload = common_pb2.TRACK_AGENT, taskpool_pb2.BOARD_UPLOAD
    ranked = await boards.ranked(agent, upload, "c1", best=False, page_token="", page_size=0)
    assert [(e["_id"], rank, group) for e, rank, group in ranked.page] == [
        ("a", 1, 1), ("b", 1, 1), ("c", 3, 2), ("top-partial", 0, 0), ("low-partial", 0, 0),
    ]  # fmt: skip
    assert ranked.total == 5
    protos = [convert.entry_to_proto(e, rank, group) for e, rank, group in ranked.page]
    assert [p.partial for p in protos] == [False, False, False, True, True]
    assert list(protos[3].missing_dimensions) == ["tool_use"]
    assert list(protos[3].missing_datasets) == ["MedCallAPI"]
    # Paging crosses from the ranked entries to the partial ones in the same order.
    first = await boards.ranked(agent, upload, "c1", best=False, page_token="", page_size=3)
    rest = await boards.ranked(agent, upload, "c1", best=False, page_token="3", page_size=3)
    assert [e["_id"] for e, _, _ in first.page] == ["a", "b", "c"]
    assert [(e["_id"], r) for e, r, _ in rest.page] == [("top-partial", 0), ("low-partial", 0)]


def test_a_board_of_partial_entries_only_ranks_none() -> None:
    order = board_order([entry("x", 50.0, partial=True), entry("y", 60.0, partial=True)])
    assert [(e["_id"], rank, group) for e, rank, group in order] == [("y", 0, 0), ("x", 0, 0)]
    assert board_order([]) == []


def test_best_prefers_a_complete_entry_to_a_higher_partial_one() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    same_model = [
        entry("s1", 70.0, tenant="t", model_name="M", at=start),
        entry("s2", 95.0, partial=True, tenant="t", model_name="M", at=start + timedelta(days=1)),
        entry("s3", 60.0, tenant="t", model_name="M", at=start + timedelta(days=2)),
    ]
    assert [e["_id"] for e in select(same_model, best=True, per_cycle=True)] == ["s1"]
    # Latest is latest, partial or not; a model with partial entries only is shown by its best.
    assert [e["_id"] for e in select(same_model[:2], best=False, per_cycle=True)] == ["s2"]
    partial_only = [e for e in same_model if e["_id"] == "s2"]
    assert [e["_id"] for e in select(partial_only, best=True, per_cycle=True)] == ["s2"]


async def test_publishing_a_partial_report_copies_its_mark_onto_the_entry() -> None:
    store, board = InMemoryScores(), InMemoryLeaderboard()
    scores = [agent_score(f"{name}-1", name, value) for name, value in PRESENT.items()]
    await record(store, agent_batch("sub-1", *scores))
    boards = Leaderboards(store, board)
    assert await boards.publish(publication(track=common_pb2.TRACK_AGENT))
    stored = board.entries["sub-1"]
    assert stored["partial"] is True
    assert stored["missing_dimensions"] == store.reports["sub-1"]["missing_dimensions"]
    assert stored["missing_datasets"] == store.reports["sub-1"]["missing_datasets"]
    page = await boards.ranked(
        common_pb2.TRACK_AGENT, taskpool_pb2.BOARD_UPLOAD, "", best=False, page_token="",
        page_size=0,
    )  # fmt: skip
    [(shown, rank, group)] = page.page
    assert (shown["_id"], rank, group) == ("sub-1", 0, 0)
    # The entry is public: it carries the live view's numbers (core/live_view.py).
    live = await live_report(store, store.reports["sub-1"])
    assert math.isclose(shown["overall"], live["overall"])
