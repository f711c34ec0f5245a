"""The aggregator's use cases with in-memory ports: recording, completion, reports, boards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.core.board import Publication
from aggregator.core.parts import scores_digest
from aggregator.entrypoints import convert
from aggregator.usecases.aggregation import Aggregation
from aggregator.usecases.leaderboards import Leaderboards
from aggregator.usecases.reports import Reports
from medbench.common.v1 import common_pb2
from medbench.scoring.v1 import scoring_events_pb2 as ev
from medbench.submission.v1 import submission_events_pb2
from medbench.taskpool.v1 import taskpool_pb2
from medbench_messaging import topics
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.services.aggregator.fakes import InMemoryLeaderboard, InMemoryScores


def score(
    item_id: str,
    value: float,
    component: str = "metric",
    dataset: str = "MedExam",
    group_id: str = "",
    components: tuple[tuple[str, float], ...] = (),
    rule: int = ev.MERGE_RULE_UNSPECIFIED,
    **extra: object,
) -> ev.ItemScore:
    return ev.ItemScore(
        item_id=item_id,
        dataset=dataset,
        dimension="knowledge" if dataset != "MedHC" else "generation",
        group_id=group_id or item_id,
        component=component,
        metric=component,
        score=value,
        components=[ev.ComponentScore(name=n, score=s) for n, s in components]
        or [ev.ComponentScore(name=component, score=value)],
        merge_rule=rule,
        **extra,  # type: ignore[arg-type]
    )


def scored(
    batch_id: str,
    *scores: ev.ItemScore,
    expected_items: int = 2,
    expected_scores: int = 0,
    rules: dict[str, str] | None = None,
    event_id: str = "",
    submission_id: str = "sub-1",
) -> ev.ItemsScored:
    component = scores[0].component if scores else "metric"
    return ev.ItemsScored(
        event_id=event_id or f"{submission_id}:{batch_id}:{component}",
        batch_id=batch_id,
        scores=scores,
        scorer_version=f"{component}-scorer/1",
        context=ev.ScoringContext(
            submission_id=submission_id,
            tenant_id="hospital-a",
            pool_id="pool-1",
            expected_items=expected_items,
            expected_scores=expected_scores,
            dataset_rules=rules or {"MedExam": "mean"},
        ),
    )


@pytest.fixture
def store() -> InMemoryScores:
    return InMemoryScores()


async def record(store: InMemoryScores, *events: ev.ItemsScored) -> None:
    aggregation = Aggregation(store)
    for event in events:
        await aggregation.record(convert.batch_from_proto(event))


async def test_the_report_is_built_and_announced_once_every_item_is_scored(
    store: InMemoryScores,
) -> None:
    await record(store, scored("b1", score("a", 1.0)))
    assert store.reports == {} and store.progress_records["sub-1"]["scored"] == 1
    await record(store, scored("b2", score("b", 0.0)))
    report = store.reports["sub-1"]
    assert report["overall"] == 50.0 and report["scored_items"] == 2
    assert [(d["dataset"], d["score"], d["items"]) for d in report["datasets"]] == [
        ("MedExam", 50.0, 2)
    ]
    assert report["lineage"]["pool_id"] == "pool-1"
    assert report["lineage"]["scorer_version"] == "metric-scorer/1"
    digest = scores_digest([("a", "metric", 1.0), ("b", "metric", 0.0)], store.key)
    assert report["lineage"]["item_scores_digest"] == digest
    # Keyed: without the platform's key the same scores give another digest (a partner cannot
    # test guesses of which items were right against it).
    assert scores_digest([("a", "metric", 1.0), ("b", "metric", 0.0)], b"guess") != digest
    with pytest.raises(ValueError, match="digest key"):
        scores_digest([("a", "metric", 1.0)], b"")
    [(event_id, outgoing)] = store.outbox
    assert event_id == "sub-1:completed" and outgoing.topic is topics.SUBMISSION_COMPLETED
    assert outgoing.key == "sub-1"
    event = outgoing.message
    assert isinstance(event, submission_events_pb2.SubmissionCompleted)
    assert (event.overall, event.scored_items, event.report_digest) == (50.0, 2, digest)
    assert store.progress_records["sub-1"]["completed"] is True


async def test_a_redelivered_batch_is_counted_once(store: InMemoryScores) -> None:
    first = scored("b1", score("a", 1.0))
    await record(store, first, first, first)
    assert store.progress_records["sub-1"]["scored"] == 1 and store.reports == {}
    await record(store, scored("b2", score("b", 1.0)), first)
    assert len(store.outbox) == 1 and store.reports["sub-1"]["overall"] == 100.0


async def test_the_distinct_parts_decide_completion_not_the_counter(
    store: InMemoryScores,
) -> None:
    # The same item's score delivered again under another id (a batch split differently):
    # the counter reaches two, but only one of two items is scored.
    await record(store, scored("b1", score("a", 1.0)), scored("b1.p0", score("a", 1.0)))
    assert store.progress_records["sub-1"]["scored"] == 2
    assert store.reports == {}
    await record(store, scored("b2", score("b", 0.5)))
    assert store.reports["sub-1"]["scored_items"] == 2


async def test_an_item_with_a_judge_component_waits_for_the_judge(store: InMemoryScores) -> None:
    hc = {"MedHC": "mean"}
    await record(
        store,
        scored("b1", score("k", 0.5, dataset="MedHC"), expected_items=1, expected_scores=2,
               rules=hc),
    )  # fmt: skip
    assert store.reports == {}
    judge = score("k", 0.9, component="judge", dataset="MedHC")
    await record(store, scored("b1", judge, expected_items=1, expected_scores=2, rules=hc))
    # Metric and judge components merge by the item's rule (mean by default).
    assert store.reports["sub-1"]["overall"] == pytest.approx(70.0)


async def test_the_min_rule_takes_the_lowest_component(store: InMemoryScores) -> None:
    rule = ev.MERGE_RULE_MIN
    await record(
        store,
        scored("b1", score("k", 0.5, rule=rule), expected_items=1, expected_scores=2),
        scored("b1", score("k", 0.9, component="judge", rule=rule), expected_items=1,
               expected_scores=2),
    )  # fmt: skip
    assert store.reports["sub-1"]["overall"] == pytest.approx(50.0)


async def test_a_part_of_several_components_is_merged_here_as_it_is_stored(
    store: InMemoryScores,
) -> None:
    part = score("a", 0.0, components=(("choice_single", 1.0), ("key_point_recall", 0.0)))
    batch = convert.batch_from_proto(scored("b1", part, expected_items=1))
    assert batch.parts[0].score == 0.5 and batch.parts[0].merge_rule == "mean"
    minimum = score("a", 0.0, components=(("x", 1.0), ("y", 0.25)), rule=ev.MERGE_RULE_MIN)
    assert convert.batch_from_proto(scored("b1", minimum)).parts[0].score == 0.25
    await record(store, scored("b1", part, expected_items=1))
    report = store.reports["sub-1"]
    assert report["overall"] == 50.0
    assert report["lineage"]["item_scores_digest"] == scores_digest(
        [("a", "metric", 0.5)], store.key
    )


async def test_a_judge_failure_is_not_a_zero(store: InMemoryScores) -> None:
    failed = score("b", 0.0, component="judge", unscored=True)
    await record(store, scored("b1", score("a", 0.8)), scored("b1", failed, expected_scores=2))
    report = store.reports["sub-1"]
    # b counts towards completion but is left out of the means.
    assert report["overall"] == pytest.approx(80.0) and report["scored_items"] == 2


async def test_shuffled_option_groups_score_their_worst_permutation(
    store: InMemoryScores,
) -> None:
    rules = {"MedExam": "all_permutations"}
    await record(
        store,
        scored("b1", score("q1-p1", 1.0, group_id="q1"), score("q1-p2", 0.0, group_id="q1"),
               score("q2-p1", 1.0, group_id="q2"), score("q2-p2", 1.0, group_id="q2"),
               expected_items=4, rules=rules),
    )  # fmt: skip
    [dataset] = store.reports["sub-1"]["datasets"]
    assert (dataset["score"], dataset["units"], dataset["item_mean"]) == (50.0, 2, 75.0)
    assert dataset["rule"] == "all_permutations"


def test_a_part_naming_no_rule_merges_by_the_mean() -> None:
    assert convert.merge_rule_name(ev.MERGE_RULE_UNSPECIFIED) == "mean"
    assert convert.merge_rule_name(ev.MERGE_RULE_MEAN) == "mean"
    assert convert.merge_rule_name(ev.MERGE_RULE_MIN) == "min"


async def test_reports_are_shown_to_their_tenant_only(store: InMemoryScores) -> None:
    board = InMemoryLeaderboard()
    reports = Reports(store, board)
    await record(store, scored("b1", score("a", 1.0), score("b", 0.0)))
    found = await reports.report("sub-1", "hospital-a")
    assert found.record["overall"] == 50.0 and found.equated is None
    with pytest.raises(NotFound):
        await reports.report("sub-1", "hospital-b")
    with pytest.raises(NotFound):
        await reports.report("sub-2")
    with pytest.raises(InvalidArgument):
        await reports.report("")
    board.entries["sub-1"] = {"_id": "sub-1", "equated": 61.5}
    assert (await reports.report("sub-1", exact=True)).equated == 61.5
    # The default is the live view: two items are two units, shown at a step of 50 points.
    live = await reports.report("sub-1")
    assert live.record["live"] and live.record["datasets"][0]["step"] == 50.0
    assert live.equated == 50.0 and "live" not in store.reports["sub-1"]
    progress = await reports.progress("sub-1")
    assert progress is not None and (progress["scored"], progress["completed"]) == (2, True)
    assert await reports.progress("sub-9") is None


async def test_item_results_hold_every_scorers_part_and_the_merged_score(
    store: InMemoryScores,
) -> None:
    reports = Reports(store)
    await record(
        store,
        scored("b1", score("k", 0.5), score("m", 1.0), expected_scores=3),
        scored("b1", score("k", 0.9, component="judge"), expected_scores=3),
        # The judge part scored again under another batch id: one part per component.
        scored("b1x", score("k", 0.9, component="judge"), expected_scores=3),
    )
    results = [r async for r in reports.item_results("sub-1", "hospital-a")]
    assert [(r.item_id, [p["component"] for p in r.parts]) for r in results] == [
        ("k", ["judge", "metric"]),
        ("m", ["metric"]),
    ]
    assert results[0].score == pytest.approx(0.7) and results[1].score == 1.0
    with pytest.raises(NotFound):
        [r async for r in reports.item_results("sub-1", "hospital-b")]


def publication(**overrides: object) -> Publication:
    given: dict[str, object] = {
        "submission_id": "sub-1",
        "tenant_id": "hospital-a",
        "published": True,
        "track": common_pb2.TRACK_LLM,
        "board": taskpool_pb2.BOARD_UPLOAD,
        "cycle": "2026Q4",
        "names": {
            "model_name": "MedModel",
            "model_version": "1",
            "organisation": "Hospital A",
            "parameter_count": "7B",
        },
        "open_source": True,
        "release_date": "",
    }
    given.update(overrides)
    return Publication(**given)  # type: ignore[arg-type]


async def test_publishing_copies_the_reports_numbers_and_withdrawing_keeps_the_record(
    store: InMemoryScores,
) -> None:
    board = InMemoryLeaderboard()
    boards = Leaderboards(store, board)
    with pytest.raises(FailedPrecondition, match="no report yet"):
        await boards.publish(publication())
    await record(store, scored("b1", score("a", 1.0), score("b", 0.0)))
    with pytest.raises(NotFound):
        await boards.publish(publication(tenant_id="hospital-b"))
    with pytest.raises(InvalidArgument, match="track"):
        await boards.publish(publication(track=0))
    assert await boards.publish(publication()) is True
    entry = board.entries["sub-1"]
    assert (entry["overall"], entry["pool_id"], entry["model_name"]) == (50.0, "pool-1", "MedModel")
    assert await boards.publish(publication(published=False)) is False
    assert board.entries["sub-1"]["published"] is False and "overall" in board.entries["sub-1"]


async def test_a_look_alike_of_another_tenants_name_is_refused(store: InMemoryScores) -> None:
    board = InMemoryLeaderboard()
    boards = Leaderboards(store, board)
    await record(store, scored("b1", score("a", 1.0), score("b", 0.0)))
    await record(store, scored("b1", score("a", 1.0), score("b", 1.0), submission_id="sub-2"))
    store.reports["sub-2"]["tenant_id"] = "hospital-b"
    await boards.publish(publication())
    look_alike = {"model_name": "MedMode1", "model_version": "1", "organisation": "B",
                  "parameter_count": ""}  # fmt: skip
    with pytest.raises(InvalidArgument, match="looks like 'MedModel'"):
        await boards.publish(
            publication(submission_id="sub-2", tenant_id="hospital-b", names=look_alike)
        )


async def test_the_board_ranks_one_entry_per_model_latest_or_best() -> None:
    board = InMemoryLeaderboard()
    boards = Leaderboards(InMemoryScores(), board)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for n, (model, overall) in enumerate([("A", 80.0), ("A", 70.0), ("B", 75.0)]):
        board.entries[f"s{n}"] = {
            "_id": f"s{n}", "tenant_id": "t", "model_name": model, "model_version": "1",
            "cycle": "c1", "overall": overall, "overall_low": overall - 1,
            "overall_high": overall + 1, "published": True, "track": common_pb2.TRACK_LLM,
            "board": taskpool_pb2.BOARD_UPLOAD, "published_at": start + timedelta(days=n),
        }  # fmt: skip
    track, upload = common_pb2.TRACK_LLM, taskpool_pb2.BOARD_UPLOAD
    latest = await boards.ranked(track, upload, "", best=False, page_token="", page_size=0)
    assert [(e["_id"], rank) for e, rank, _ in latest.page] == [("s2", 1), ("s1", 2)]
    best = await boards.ranked(track, upload, "", best=True, page_token="", page_size=1)
    assert [e["_id"] for e, _, _ in best.page] == ["s0"]
    assert (best.next_page_token, best.total) == ("1", 2)
    rest = await boards.ranked(track, upload, "", best=True, page_token="1", page_size=1)
    assert [e["_id"] for e, _, _ in rest.page] == ["s2"] and rest.next_page_token == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        await boards.ranked(track, upload, "", best=True, page_token="x", page_size=1)
