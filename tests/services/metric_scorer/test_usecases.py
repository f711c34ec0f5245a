"""ItemScoring with in-memory ports: what a batch of responses turns into (no stack)."""

from __future__ import annotations

import pytest

from medbench.scoring.v1 import scoring_events_pb2 as ev
from medbench_messaging import topics
from medbench_storage.pool_keys import PoolKey
from medbench_storage.variants import DETAIL, ORDER, CanaryKey
from metric_scorer.core.batch import MismatchedResponse, Response, ResponseBatch
from metric_scorer.usecases.item_scoring import ItemScoring, merge_rule_named
from tests.services.metric_scorer.fakes import (
    InMemoryLeakSignals,
    InMemoryPoolKeys,
    InMemoryPublisher,
    InMemoryVariants,
)

POOL = [
    PoolKey("MedExam-1", "MedExam", "knowledge", "MedExam-1", "choice_single", "all_permutations",
            ("B",)),
    PoolKey("MedHC-1", "MedHC", "generation", "MedHC-1", "key_point_recall+judge", "mean", (),
            ("低盐饮食", "规律服药", "监测血压"), rubric_id="generic", prompt="高血压？"),
    PoolKey("MedDoc-1", "MedDoc", "generation", "MedDoc-1", "judge", "mean", ("参考",),
            rubric_id="generic"),
    PoolKey("MedMix-1", "MedMix", "reasoning", "MedMix-1", "choice_single+key_point_recall",
            "mean", ("B",), ("低盐饮食",)),
]  # fmt: skip


def batch(*responses: Response, batch_id: str = "b1", self_test: bool = False) -> ResponseBatch:
    return ResponseBatch(
        submission_id="sub-1",
        tenant_id="hospital-a",
        pool_id="pool-1",
        batch_id=batch_id,
        expected_items=len(POOL),
        responses=responses,
        self_test=self_test,
        track=1,
    )


def answer(ordinal: int, text: str, missing: bool = False) -> Response:
    return Response(POOL[ordinal].item_id, ordinal, text, missing, f"hash-{ordinal}")


def scoring(
    orders: dict[str, dict[str, tuple[int, ...]]] | None = None,
    rule: str = "mean",
    judge_key_points: bool = True,
) -> tuple[ItemScoring, InMemoryPublisher]:
    publisher = InMemoryPublisher()
    use_case = ItemScoring(
        InMemoryPoolKeys({"pool-1": POOL}),
        InMemoryVariants(orders),
        publisher,
        merge_rule=rule,
        judge_key_points=judge_key_points,
    )
    return use_case, publisher


def scored(publisher: InMemoryPublisher) -> dict[str, ev.ItemScore]:
    return {s.item_id: s for m in publisher.on(topics.ITEM_SCORED) for s in m.scores}


async def test_a_choice_answer_is_scored_and_published_with_the_submissions_context() -> None:
    use_case, publisher = scoring()
    await use_case.score_batch(batch(answer(0, "答案：<B>")))
    [message] = publisher.on(topics.ITEM_SCORED)
    assert message.event_id == "sub-1:b1:metric" and message.batch_id == "b1"
    assert message.context == ev.ScoringContext(
        submission_id="sub-1",
        tenant_id="hospital-a",
        pool_id="pool-1",
        expected_items=4,
        # One part each: MedHC's key points ride on its judge part (the judge decides them);
        # MedMix, with no judge, has one part of two components.
        expected_scores=4,
        dataset_rules={"MedExam": "all_permutations"},
    )
    [item] = message.scores
    assert (item.component, item.metric, item.score, item.parsed) == (
        "metric",
        "choice_single",
        1.0,
        "B",
    )
    assert item.merge_rule == ev.MERGE_RULE_MEAN and item.prompt_hash == "hash-0"
    assert publisher.on(topics.JUDGE_REQUESTED) == []


async def test_choices_are_scored_in_the_order_the_tenants_download_showed() -> None:
    # This download showed the original options C, B, A: original B is still shown as B,
    # original A is shown as C.
    shown = {"sub-1": {"MedExam-1": (2, 0, 1)}}
    use_case, publisher = scoring(orders=shown)
    await use_case.score_batch(batch(answer(0, "<C>")))
    assert scored(publisher)["MedExam-1"].score == 1.0
    use_case, publisher = scoring(orders=shown)
    await use_case.score_batch(batch(answer(0, "<B>")))
    assert scored(publisher)["MedExam-1"].score == 0.0


async def test_a_missing_answer_scores_zero_without_a_judge_call() -> None:
    use_case, publisher = scoring()
    await use_case.score_batch(
        batch(answer(0, "", missing=True), answer(1, "", missing=True), answer(2, "", True))
    )
    parts = [(s.item_id, s.component, s.score, s.parsed) for m in publisher.on(topics.ITEM_SCORED)
             for s in m.scores]  # fmt: skip
    assert parts == [
        ("MedExam-1", "metric", 0.0, ""),
        ("MedHC-1", "judge", 0.0, "no answer"),
        ("MedDoc-1", "judge", 0.0, "no answer"),
    ]
    # The judge would have decided MedHC's key points: its zero part carries both components.
    medhc = scored(publisher)["MedHC-1"]
    assert [(c.name, c.score) for c in medhc.components] == [
        ("judge", 0.0),
        ("key_point_recall", 0.0),
    ]
    assert medhc.metric == "key_point_recall+judge" and not medhc.HasField("score")
    assert publisher.on(topics.JUDGE_REQUESTED) == []
    ids = [m.event_id for m in publisher.on(topics.ITEM_SCORED)]
    assert ids == ["sub-1:b1:metric", "sub-1:b1:judge"]


async def test_judge_components_are_requested_with_the_same_envelope() -> None:
    use_case, publisher = scoring()
    await use_case.score_batch(
        batch(answer(1, "建议低盐饮食，并且规律服药。"), answer(2, "病历"), self_test=True)
    )
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    # The judge decides MedHC's key points: nothing of it is scored here.
    assert publisher.on(topics.ITEM_SCORED) == []
    assert request.context.expected_scores == 4
    assert request.event_id == "sub-1:b1:judge-requested" and request.batch_id == "b1"
    assert request.self_test and request.track == 1
    assert [
        (t.item_id, t.rubric_id, t.ordinal, t.answer, t.key_point_recall, t.metric)
        for t in request.tasks
    ] == [
        ("MedHC-1", "generic", 1, "建议低盐饮食，并且规律服药。", True, "key_point_recall+judge"),
        ("MedDoc-1", "generic", 2, "病历", False, "judge"),
    ]


async def test_with_no_judge_deciding_key_points_they_are_matched_here_and_labelled_lexical() -> (
    None
):
    use_case, publisher = scoring(judge_key_points=False)
    await use_case.score_batch(batch(answer(1, "建议低盐饮食，并且规律服药。"), self_test=True))
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    [metric] = publisher.on(topics.ITEM_SCORED)
    assert request.context == metric.context
    # MedHC has two parts here (lexical key points + judge): counted so.
    assert metric.context.expected_scores == 5
    [task] = request.tasks
    assert (task.key_point_recall, task.metric) == (False, "key_point_recall_lexical+judge")
    # The key points are matched here, under a name no judged recall has; the judge scores
    # the rest.
    [recall] = metric.scores
    assert recall.metric == "key_point_recall_lexical+judge"
    assert [(c.name, round(c.score, 4)) for c in recall.components] == [
        ("key_point_recall_lexical", round(2 / 3, 4))
    ]
    assert recall.score == pytest.approx(2 / 3)


async def test_a_part_of_several_components_leaves_their_merge_to_the_aggregator() -> None:
    use_case, publisher = scoring()
    await use_case.score_batch(batch(answer(3, "<B>")))
    [part] = scored(publisher).values()
    # No judge in MedMix's spec: its key points can only be matched here, labelled so.
    assert [(c.name, c.score) for c in part.components] == [
        ("choice_single", 1.0),
        ("key_point_recall_lexical", 0.0),
    ]
    assert part.metric == "choice_single+key_point_recall_lexical"
    assert part.score == 0.0, "the merge is the aggregator's arithmetic"
    assert part.merge_rule == ev.MERGE_RULE_MEAN


async def test_the_configured_merge_rule_is_named_on_every_part_and_task() -> None:
    use_case, publisher = scoring(rule="min")
    await use_case.score_batch(batch(answer(0, "<B>"), answer(1, "低盐饮食")))
    assert {s.merge_rule for s in scored(publisher).values()} == {ev.MERGE_RULE_MIN}
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    assert [t.merge_rule for t in request.tasks] == [ev.MERGE_RULE_MIN]


def test_a_merge_rule_the_wire_contract_does_not_declare_is_refused_at_start() -> None:
    assert merge_rule_named("mean") == ev.MERGE_RULE_MEAN
    assert merge_rule_named("min") == ev.MERGE_RULE_MIN
    with pytest.raises(ValueError, match="unknown merge rule 'median'"):
        merge_rule_named("median")
    with pytest.raises(ValueError, match="unknown merge rule"):
        ItemScoring(InMemoryPoolKeys({}), InMemoryVariants(), InMemoryPublisher(), "unspecified")


async def test_a_response_not_at_its_ordinal_is_refused_and_nothing_is_published() -> None:
    use_case, publisher = scoring()
    wrong = Response("MedHC-1", 0, "<B>", False, "h")
    with pytest.raises(MismatchedResponse, match="not at ordinal 0"):
        await use_case.score_batch(batch(answer(0, "<B>"), wrong))
    beyond = Response("MedExam-1", 7, "<B>", False, "h")
    with pytest.raises(MismatchedResponse):
        await use_case.score_batch(batch(beyond))
    assert publisher.batches == []


async def test_a_redelivered_batch_publishes_the_same_events() -> None:
    use_case, publisher = scoring()
    responses = (answer(0, "<A>"), answer(1, "规律服药"), answer(3, "低盐"))
    await use_case.score_batch(batch(*responses))
    await use_case.score_batch(batch(*responses))
    first, again = publisher.batches
    strip = [(o.topic.name, o.key, o.message.event_id) for o in first]
    assert strip == [(o.topic.name, o.key, o.message.event_id) for o in again]
    for a, b in zip(first, again, strict=True):
        a.message.ClearField("scored_at") if a.topic is topics.ITEM_SCORED else None
        b.message.ClearField("scored_at") if b.topic is topics.ITEM_SCORED else None
        assert a.message == b.message


async def test_batches_are_keyed_by_submission_and_only_non_empty_events_are_sent() -> None:
    use_case, publisher = scoring()
    await use_case.score_batch(batch(answer(2, "病历"), batch_id="b7"))
    assert [(o.topic, o.key, o.message.event_id) for o in publisher.messages] == [
        (topics.JUDGE_REQUESTED, "sub-1", "sub-1:b7:judge-requested")
    ]


async def test_the_expected_score_count_is_read_once_per_pool_key_list() -> None:
    keys = InMemoryPoolKeys({"pool-1": POOL})
    publisher = InMemoryPublisher()
    use_case = ItemScoring(keys, InMemoryVariants(), publisher)
    for n in range(3):
        await use_case.score_batch(batch(answer(0, "<B>"), batch_id=f"b{n}"))
    totals = {m.context.expected_scores for m in publisher.on(topics.ITEM_SCORED)}
    assert totals == {4} and keys.reads == ["pool-1"] * 3


async def test_every_event_carries_what_the_report_must_cover_as_the_pool_records_it() -> None:
    # The track has a dataset the pool holds no item of (MedRare): it is in the coverage all
    # the same, for the aggregator to mark a report without it as partial.
    coverage = {"MedExam": "knowledge", "MedHC": "generation", "MedDoc": "generation",
                "MedMix": "reasoning", "MedRare": "reasoning"}  # fmt: skip
    keys = InMemoryPoolKeys({"pool-1": POOL}, coverage={"pool-1": coverage})
    publisher = InMemoryPublisher()
    await ItemScoring(keys, InMemoryVariants(), publisher).score_batch(
        batch(answer(0, "<B>"), answer(1, "低盐饮食"))
    )
    scored_events = publisher.on(topics.ITEM_SCORED)
    judge_requests = publisher.on(topics.JUDGE_REQUESTED)
    assert scored_events and judge_requests
    for message in [*scored_events, *judge_requests]:
        assert dict(message.context.coverage) == coverage


# -- canaries: pool items shown altered, scored like any item against their own key ----------


def canary_scoring(
    canaries: dict[str, CanaryKey],
    orders: dict[str, tuple[int, ...]] | None = None,
    judge_key_points: bool = True,
) -> tuple[ItemScoring, InMemoryPublisher, InMemoryLeakSignals]:
    publisher, signals = InMemoryPublisher(), InMemoryLeakSignals()
    use_case = ItemScoring(
        InMemoryPoolKeys({"pool-1": POOL_45 + POOL[2:]}),
        InMemoryVariants({"sub-1": orders or {}}, {"sub-1": canaries}),
        publisher,
        signals=signals,
        judge_key_points=judge_key_points,
    )
    return use_case, publisher, signals


# MedExam-1 (key B of A, B, C) shown as C, A, B: right is C; its plain order's key was A, the
# bank's B: both are answers right for the original only.
ORDER_CANARY = {"MedExam-1": CanaryKey("MedExam-1", ORDER, ("A", "B"))}
# MedHC-1 shown with the patient's age moved from 45 to 47 in its prompt and its key points.
POOL_45 = [
    POOL[0],
    PoolKey("MedHC-1", "MedHC", "generation", "MedHC-1", "key_point_recall+judge", "mean", (),
            ("45岁男性", "低盐饮食", "规律服药"), rubric_id="generic", prompt="45岁，高血压？"),
]  # fmt: skip
DETAIL_CANARY = {
    "MedHC-1": CanaryKey("MedHC-1", DETAIL, ("45",), age="45", moved="47", moves_key=True)
}


async def test_an_order_canary_is_scored_through_its_order_and_its_originals_letters_signal() -> (
    None
):
    right = (answer(0, "<C>"), "C", 1.0, {})
    plain = (answer(0, "<A>"), "A", 0.0, {("sub-1", "MedExam-1"): "letters A"})
    bank = (answer(0, "答案是B"), "B", 0.0, {("sub-1", "MedExam-1"): "letters B"})
    for response, parsed, score, signalled in (right, plain, bank):
        use_case, publisher, signals = canary_scoring(ORDER_CANARY, {"MedExam-1": (2, 0, 1)})
        await use_case.score_batch(batch(response))
        [item] = scored(publisher).values()
        # The partner's side of it is any choice item's: its score and parsed letters.
        assert (item.item_id, item.metric, item.parsed, item.score) == (
            "MedExam-1", "choice_single", parsed, score
        )  # fmt: skip
        assert {k: s.matched for k, s in signals.signals.items()} == signalled
        assert all((s.tenant_id, s.pool_id, s.kind) == ("hospital-a", "pool-1", ORDER)
                   for s in signals.signals.values())  # fmt: skip


async def test_a_detail_canary_is_scored_against_its_own_key_and_the_original_age_signals() -> None:
    # Key points matched here (lexically), against the canary's own key.
    use_case, publisher, signals = canary_scoring(DETAIL_CANARY, judge_key_points=False)
    await use_case.score_batch(batch(answer(1, "47岁男性，建议低盐饮食，规律服药。")))
    [recall] = scored(publisher).values()
    assert recall.score == pytest.approx(1.0)  # every altered key point is covered
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    # The judge reads the canary's key from the sealed variant; nothing of it is on the topic.
    for task in request.tasks:
        task.ClearField("answer")
    assert "47" not in str(request) and "低盐" not in str(request)
    assert signals.signals == {}

    use_case, publisher, signals = canary_scoring(DETAIL_CANARY, judge_key_points=False)
    await use_case.score_batch(batch(answer(1, "45岁男性，建议低盐饮食，规律服药。")))
    [recall] = scored(publisher).values()
    assert recall.score == pytest.approx(2 / 3)
    [signal] = signals.signals.values()
    assert (signal.item_id, signal.dataset, signal.kind, signal.matched) == (
        "MedHC-1", "MedHC", DETAIL, "value 45"
    )  # fmt: skip
    # Key points judged (the judge reads the canary's key from the sealed variant): nothing is
    # scored here, and the original's age still signals.
    use_case, publisher, signals = canary_scoring(DETAIL_CANARY)
    await use_case.score_batch(batch(answer(1, "45岁男性，建议低盐饮食，规律服药。")))
    assert scored(publisher) == {}
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    assert [t.key_point_recall for t in request.tasks] == [True]
    [signal] = signals.signals.values()
    assert signal.matched == "value 45"


async def test_a_missing_or_unrelated_answer_to_a_canary_signals_nothing() -> None:
    use_case, _, signals = canary_scoring({**ORDER_CANARY, **DETAIL_CANARY})
    await use_case.score_batch(
        batch(answer(0, "", missing=True), answer(1, "445 或 4.5 或 145"), answer(3, "<A>"))
    )
    assert signals.signals == {}


async def test_an_item_whose_key_cannot_be_applied_is_recorded_unscored_and_its_batch_goes_on() -> (
    None
):
    """A key the scorer cannot apply (no reference letter; a reference that is no letter) is
    this item's
    fault, not its batch's: every other item is scored, this one recorded unscored with why
    (its judge part still requested), and counted for maintainers."""
    from metric_scorer.usecases.item_scoring import UNSCORABLE

    bad = [
        POOL[0],
        PoolKey("MedBad-1", "MedBad", "knowledge", "MedBad-1", "choice_single", "mean", ()),
        PoolKey("MedBad-2", "MedBad", "generation", "MedBad-2", "choice_single+judge", "mean",
                ("AB",), rubric_id="generic"),
    ]  # fmt: skip
    publisher = InMemoryPublisher()
    use_case = ItemScoring(InMemoryPoolKeys({"pool-1": bad}), InMemoryVariants(None), publisher)
    before = UNSCORABLE.labels("MedBad")._value.get()
    responses = [Response(k.item_id, n, "<B>", False, f"hash-{n}") for n, k in enumerate(bad)]
    await use_case.score_batch(
        ResponseBatch("sub-1", "hospital-a", "pool-1", "b1", len(bad), tuple(responses), False, 1)
    )
    parts = scored(publisher)
    assert parts["MedExam-1"].score == 1.0 and not parts["MedExam-1"].unscored
    for item_id in ("MedBad-1", "MedBad-2"):
        assert parts[item_id].unscored and parts[item_id].parsed.startswith("not scored: ")
    assert "at least one option letter" in parts["MedBad-1"].parsed
    [request] = publisher.on(topics.JUDGE_REQUESTED)
    assert [t.item_id for t in request.tasks] == ["MedBad-2"]
    assert UNSCORABLE.labels("MedBad")._value.get() == before + 2
