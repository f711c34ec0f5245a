"""The event size rule: the largest event every accepted input can produce fits the limit."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from medbench.inference.v1 import inference_events_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench.submission.v1 import submission_events_pb2, submission_pb2
from medbench.taskpool.v1 import taskpool_events_pb2, taskpool_pb2
from medbench_messaging import topics
from medbench_messaging.sizing import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_ANSWER_BYTES,
    MAX_NOTE_BYTES,
    EventTooLarge,
    broker_max_message_bytes,
    clip_utf8,
    split_to_fit,
)

LIMIT = DEFAULT_MAX_EVENT_BYTES
ITEMS_PER_MESSAGE = 5000  # the gateway's limit of answers per UploadAnswers message
ITEM_ID = "x" * 128  # the longest item id the gateway admits
# The longest answer in bytes, written with 3-byte characters (the worst UTF-8 case ends in a
# 1-byte one): exactly MAX_ANSWER_BYTES.
LONGEST_ANSWER = "答" * (MAX_ANSWER_BYTES // 3) + "a" * (MAX_ANSWER_BYTES % 3)


def responses(n: int, answer: str = LONGEST_ANSWER) -> inference_events_pb2.ResponsesRecorded:
    return inference_events_pb2.ResponsesRecorded(
        event_id="sub_" + "0" * 24 + ":b" * 60,
        submission_id="sub_" + "0" * 24,
        tenant_id="t" * 64,
        pool_id="llm-upload-2026-12",
        batch_id="b" * 128,
        expected_items=100_000,
        responses=[
            inference_events_pb2.RecordedResponse(
                item_id=f"{ITEM_ID[:-6]}{i:06d}",
                ordinal=i,
                dataset="MedDialogueSummary",
                answer=answer,
                prompt_hash="f" * 64,
            )
            for i in range(n)
        ],
    )


def judge_requests(n: int) -> scoring_events_pb2.JudgeRequested:
    return scoring_events_pb2.JudgeRequested(
        event_id="e" * 200,
        batch_id="b" * 128,
        tasks=[
            scoring_events_pb2.JudgeTask(
                item_id=f"{ITEM_ID[:-6]}{i:06d}",
                dataset="MedDialogueSummary",
                rubric_id="r" * 64,
                answer=LONGEST_ANSWER,
                ordinal=i,
                dimension="medical_language_generation",
                group_id=ITEM_ID,
                merge_rule=scoring_events_pb2.MERGE_RULE_MEAN,
                prompt_hash="f" * 64,
            )
            for i in range(n)
        ],
        context=scoring_events_pb2.ScoringContext(
            submission_id="sub_" + "0" * 24,
            dataset_rules={f"dataset-{d}": "all_permutations" for d in range(80)},
        ),
    )


def item_scores(n: int) -> scoring_events_pb2.ItemsScored:
    lineage = scoring_events_pb2.JudgeLineage(
        judge_models=["qwen2.5-72b-instruct"] * 5,
        rubric_id="r" * 64,
        rubric_hash="h" * 64,
        prompt_hash="p" * 64,
        calibration_id="c" * 64,
        panel_rule="median",
        injection_flags=["instruction_to_grader", "score_claim", "hidden_text"],
        judge_scores=[0.5] * 5,
    )
    return scoring_events_pb2.ItemsScored(
        event_id="e" * 200,
        batch_id="b" * 128,
        scores=[
            scoring_events_pb2.ItemScore(
                item_id=f"{ITEM_ID[:-6]}{i:06d}",
                dataset="MedDialogueSummary",
                dimension="medical_language_generation",
                group_id=ITEM_ID,
                component="judge",
                metric="key_point_recall+judge",
                score=0.25,
                parsed=clip_utf8("答" * 10_000, MAX_NOTE_BYTES),
                components=[scoring_events_pb2.ComponentScore(name="c" * 32, score=1.0)] * 4,
                judge=lineage,
                prompt_hash="f" * 64,
            )
            for i in range(n)
        ],
        context=scoring_events_pb2.ScoringContext(
            submission_id="sub_" + "0" * 24,
            dataset_rules={f"dataset-{d}": "all_permutations" for d in range(80)},
        ),
    )


def check_parts(message, field: str, parts: list) -> None:  # type: ignore[no-untyped-def]
    assert all(p.ByteSize() <= LIMIT for p in parts)
    # Nothing lost, nothing twice, order kept; everything else carried by every part.
    joined = [e for p in parts for e in getattr(p, field)]
    assert joined == list(getattr(message, field))
    if len(parts) > 1:
        assert [p.event_id for p in parts] == [
            f"{message.event_id}.p{k}" for k in range(len(parts))
        ]
        assert len({p.batch_id for p in parts}) == len(parts)
    for p in parts:
        rest = type(message)()
        rest.CopyFrom(p)
        rest.ClearField(field)
        rest.event_id, rest.batch_id = message.event_id, message.batch_id
        whole = type(message)()
        whole.CopyFrom(message)
        whole.ClearField(field)
        assert rest == whole


@pytest.mark.parametrize(
    ("topic", "build", "n"),
    [
        # The largest upload message's answers (5,000 x 32 KiB: more than one gRPC message may
        # carry, so a bound beyond any real input), and the largest API-mode record batch.
        (topics.RESPONSE_RECORDED, responses, ITEMS_PER_MESSAGE),
        (topics.RESPONSE_RECORDED, responses, 200),
        # Judge requests of the longest answers (references stay with the judge: never here).
        (topics.JUDGE_REQUESTED, judge_requests, ITEMS_PER_MESSAGE),
        # Scores with the longest notes and a five-judge panel's lineage.
        (topics.ITEM_SCORED, item_scores, ITEMS_PER_MESSAGE),
    ],
)
def test_the_largest_batch_of_every_batch_topic_is_split_into_parts_that_fit(
    topic: topics.Topic,
    build,
    n: int,  # type: ignore[no-untyped-def]
) -> None:
    message = build(n)
    assert message.ByteSize() > LIMIT
    parts = split_to_fit(message, topic.batch_field, LIMIT)
    check_parts(message, topic.batch_field, parts)
    # Deterministic: a redelivered input makes the same parts (consumers stay idempotent).
    again = split_to_fit(message, topic.batch_field, LIMIT)
    assert [(p.event_id, len(getattr(p, topic.batch_field))) for p in again] == [
        (p.event_id, len(getattr(p, topic.batch_field))) for p in parts
    ]


def test_a_batch_that_fits_is_left_as_it_is() -> None:
    message = responses(3)
    assert split_to_fit(message, "responses", LIMIT) == [message]
    assert split_to_fit(message, "responses", LIMIT)[0].event_id == message.event_id


def test_the_reproduction_of_the_crash_loop_is_split() -> None:
    """63 answers of 30,000 bytes: 1.27 MB in one event before the size rule."""
    message = responses(63, "a" * 30_000)
    assert message.ByteSize() > 1_048_576
    parts = split_to_fit(message, "responses", LIMIT)
    assert len(parts) == 2
    check_parts(message, "responses", parts)


def test_events_without_a_batch_field_fit_at_the_largest_inputs() -> None:
    """Submission-created and pool-rotated carry bounded fields only."""
    submission = submission_pb2.Submission(
        submission_id="sub_" + "0" * 24,
        tenant_id="t" * 64,
        request_id="r" * 128,
        model=submission_pb2.ModelInfo(
            name="m" * 200, version="v" * 100, organisation="o" * 200, parameter_count="p" * 32
        ),
        state_reason="r" * 2000,
        # The gateway's limits: URL 2,048, key 4,096, model name 200.
        endpoint=submission_pb2.Endpoint(
            base_url="https://" + "h" * 2040, model="m" * 200, api_key="k" * 4096
        ),
    )
    created = submission_events_pb2.SubmissionCreated(event_id="e" * 200, submission=submission)
    rotated = taskpool_events_pb2.PoolRotated(
        event_id="e" * 200,
        pool=taskpool_pb2.Pool(
            pool_id="p" * 128,
            datasets=[taskpool_pb2.DatasetCount(dataset="d" * 64, items=30)] * 200,
        ),
    )
    for message in (created, rotated):
        assert message.ByteSize() < LIMIT // 10
        assert split_to_fit(message, None, LIMIT) == [message]


def test_an_event_that_cannot_be_split_is_refused_with_the_reason() -> None:
    big = submission_events_pb2.SubmissionCreated(
        event_id="e",
        submission=submission_pb2.Submission(
            model=submission_pb2.ModelInfo(name="m" * (LIMIT + 1))
        ),
    )
    with pytest.raises(EventTooLarge, match="limit is 1000000"):
        split_to_fit(big, None, LIMIT)
    # One element larger than the limit can never fit, whatever the split.
    with pytest.raises(EventTooLarge, match=r"responses\[1\]"):
        split_to_fit(_one_huge(), "responses", LIMIT)


def _one_huge() -> inference_events_pb2.ResponsesRecorded:
    message = responses(2, "a")
    message.responses[1].answer = "a" * (LIMIT + 1)
    return message


# The bytes fields events may have, none of them an image: each bounded where it is made.
BOUNDED_BYTES = {
    # An API run's answer digests, 4 bytes an item, at most 50,000 items (dispatcher
    # core/jobs.py MAX_DIGEST_ITEMS; tests/services/dispatcher: the largest fits the smallest
    # event limit).
    "medbench.dispatch.v1.DispatchProgressed.answer_digests",
}


def test_no_event_carries_image_bytes_so_images_never_travel_on_kafka() -> None:
    """Multimodal items' images stay in the task bank: no event type has a bytes field but the
    bounded ones named above, so an item with many images makes no bigger event than one
    without."""

    def bytes_fields(descriptor, seen: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
        if descriptor.full_name in seen:
            return []
        seen.add(descriptor.full_name)
        found = []
        for f in descriptor.fields:
            if f.type == FieldDescriptor.TYPE_BYTES:
                found.append(f"{descriptor.full_name}.{f.name}")
            if f.message_type is not None:
                found += bytes_fields(f.message_type, seen)
        return found

    found = set()
    for topic in topics.ALL_TOPICS:
        fields = set(bytes_fields(topic.message_type.DESCRIPTOR, set()))
        assert fields <= BOUNDED_BYTES, (topic.name, fields - BOUNDED_BYTES)
        found |= fields
    assert found == BOUNDED_BYTES, "a bounded field no event has any more: drop it above"


def test_clip_keeps_whole_characters() -> None:
    assert clip_utf8("答答", 5) == "答"
    assert clip_utf8("abc", 3) == "abc"
    assert len(clip_utf8("答" * 20_000, MAX_ANSWER_BYTES).encode()) <= MAX_ANSWER_BYTES


def test_topics_admit_the_event_limit_with_room_for_key_and_headers() -> None:
    assert broker_max_message_bytes(LIMIT) - LIMIT >= 16 * 1024
