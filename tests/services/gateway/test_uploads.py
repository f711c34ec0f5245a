"""Upload rules of the gateway (pure)."""

from __future__ import annotations

import pytest

from gateway.core import uploads
from medbench_messaging.sizing import MAX_ANSWER_BYTES
from medbench_runtime.errors import InvalidArgument

MANIFEST = {f"item-{i}": (i, "MedExam") for i in range(20)}


def test_submission_id_is_stable_and_tenant_scoped() -> None:
    a = uploads.submission_id_for("hospital-a", "run-1")
    assert a == uploads.submission_id_for("hospital-a", "run-1")
    assert a != uploads.submission_id_for("hospital-b", "run-1")
    assert a != uploads.submission_id_for("hospital-a", "run-2")
    # No separator ambiguity: ("a", "bc") and ("ab", "c") differ.
    assert uploads.submission_id_for("a", "bc") != uploads.submission_id_for("ab", "c")


@pytest.mark.parametrize(
    "value", ["", "x" * 129, "has space", "slash/no", "ünïcode", "run-1\n", "run\x00", "run１"]
)
def test_malformed_ids_are_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument, match="batch_id"):
        uploads.check_request_id("batch_id", value)


@pytest.mark.parametrize("value", ["GPT\u202e5", "a\u2066b\u2069", "\u202aname\u202c"])
def test_bidirectional_controls_are_refused_in_shown_names(value: str) -> None:
    with pytest.raises(InvalidArgument, match="model.name contains bidirectional control"):
        uploads.check_text("model.name", value, uploads.MAX_MODEL_NAME)


def test_other_unicode_in_names_is_kept_in_its_normalised_form() -> None:
    for value, shown in [
        ("医学模型 👩\u200d⚕️", "医学模型 👩\u200d⚕️"),  # a joiner inside an emoji sequence
        ("ＭｅｄＧＰＴ－７Ｂ", "MedGPT-7B"),
        ("Me\u0301dGPT", "MédGPT"),
        ("模型（第２版）", "模型(第2版)"),
    ]:
        assert uploads.check_text("model.name", value, uploads.MAX_MODEL_NAME) == shown


@pytest.mark.parametrize(
    "value",
    [
        "医学模型\u200d👩",  # a joiner between a letter and an emoji
        "GPT\u200b4",
        "\ufeffGPT",
        "GPT\u2060-4",
        "a\u2028b",
        "a\u2029b",
        "GPT\U000e0041",
        "GPT\u00ad4",
    ],
)
def test_invisible_and_format_characters_are_refused_in_shown_names(value: str) -> None:
    with pytest.raises(InvalidArgument, match="model.name contains an invisible or format"):
        uploads.check_text("model.name", value, uploads.MAX_MODEL_NAME)


def test_check_batch_maps_items_to_ordinals() -> None:
    out = uploads.check_batch([("item-3", "<A>"), ("item-0", "<B>")], MANIFEST, MAX_ANSWER_BYTES)
    assert [(a.item_id, a.ordinal, a.answer) for a in out] == [
        ("item-3", 3, "<A>"),
        ("item-0", 0, "<B>"),
    ]


@pytest.mark.parametrize(
    ("answers", "phrase"),
    [
        ([], "at least one answer"),
        ([("item-1", "<A>"), ("item-1", "<B>")], "twice in one message"),
        (
            [("item-1", "<A>"), ("nope", "<B>"), ("nah", "")],
            r"2 answers .* answers\[1\] \(item 'nope'\), answers\[2\] \(item 'nah'\)$",
        ),
        ([("item-1", "x" * (MAX_ANSWER_BYTES + 1))], "bytes"),
        (
            [(f"item-{i % 20}-{i}", "") for i in range(uploads.MAX_ANSWERS_PER_MESSAGE + 1)],
            "at most",
        ),
    ],
)
def test_bad_batches_are_rejected_whole(answers: list[tuple[str, str]], phrase: str) -> None:
    with pytest.raises(InvalidArgument, match=phrase):
        uploads.check_batch(answers, MANIFEST, MAX_ANSWER_BYTES)


def test_many_unknown_ids_are_summarised() -> None:
    many = uploads.UNKNOWN_SHOWN + 5
    with pytest.raises(InvalidArgument) as err:
        uploads.check_batch([(f"x{i}", "") for i in range(many)], MANIFEST, MAX_ANSWER_BYTES)
    message = str(err.value)
    assert message.startswith(f"{many} answers are for items not served")
    assert f"answers[{uploads.UNKNOWN_SHOWN - 1}] (item 'x{uploads.UNKNOWN_SHOWN - 1}')" in message
    assert message.endswith(" and 5 more") and len(message.encode()) < 4096


def test_answer_size_counts_utf8_bytes_not_characters() -> None:
    chinese = "答" * (MAX_ANSWER_BYTES // 3)  # 3 bytes each: exactly at the limit
    assert uploads.check_batch([("item-1", chinese)], MANIFEST, MAX_ANSWER_BYTES)
    with pytest.raises(InvalidArgument):
        uploads.check_batch([("item-1", chinese + "答")], MANIFEST, MAX_ANSWER_BYTES)


def test_bitmap_tracks_answered_items() -> None:
    bits = uploads.new_bitmap(20)
    assert len(bits) == 3
    uploads.set_bits(bits, [0, 7, 8, 19])
    assert uploads.already_set(bits, [1, 7, 8, 18, 19]) == [7, 8, 19]
    missing = uploads.unset_ordinals(bits, 20)
    assert len(missing) == 16 and 0 not in missing and 1 in missing


def test_batch_digest_distinguishes_content_and_order() -> None:
    a = uploads.batch_digest([("i1", "<A>"), ("i2", "<B>")])
    assert a == uploads.batch_digest([("i1", "<A>"), ("i2", "<B>")])
    assert a != uploads.batch_digest([("i2", "<B>"), ("i1", "<A>")])
    assert a != uploads.batch_digest([("i1", "<A>"), ("i2", "<C>")])
    assert uploads.batch_digest([("i1", "A\x00i2")]) != uploads.batch_digest(
        [("i1", "A"), ("i2", "")]
    )
