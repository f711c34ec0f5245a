"""Task-bank rules of the rotator (pure)."""

from __future__ import annotations

import pytest

from medbench_runtime.errors import InvalidArgument
from rotator.core.bank import (
    CHUNK_BYTES,
    MAX_KEY_BYTES,
    MAX_PROMPT_BYTES,
    DatasetInfo,
    ItemRejected,
    KeyRecord,
    TaskRecord,
    check_id,
    chunks,
    content_hash,
    freeze_pool,
    validate_item,
)

EXAM = DatasetInfo(
    "MedExam", "llm", "knowledge_qa", "choice_single", "choice_single", "all_permutations"
)
DDX = DatasetInfo(
    "DDx-advanced", "llm", "complex_reasoning", "choice_multi", "choice_multi", "mean"
)


def task(
    item_id: str = "MedExam-1-p1",
    dataset: str = "MedExam",
    fmt: str = "choice_single",
    question: str = "题目 A. x B. y",
    track: str = "llm",
) -> TaskRecord:
    return TaskRecord(item_id, dataset, track, question, fmt, item_id.rsplit("-p", 1)[0])


def test_a_good_item_passes() -> None:
    validate_item(task(), KeyRecord("MedExam-1-p1", ("B",)), EXAM)


@pytest.mark.parametrize(
    ("t", "key", "info", "phrase"),
    [
        (task(item_id="bad id"), KeyRecord("bad id", ("A",)), EXAM, "not valid"),
        (task(), KeyRecord("MedExam-1-p1", ("A",)), None, "not in the registry"),
        (task(track="agent"), KeyRecord("MedExam-1-p1", ("A",)), EXAM, "belongs to track llm"),
        (task(question="  "), KeyRecord("MedExam-1-p1", ("A",)), EXAM, "question is empty"),
        (task(fmt="choice_multi"), KeyRecord("MedExam-1-p1", ("A",)), EXAM, "does not match"),
        (task(), KeyRecord("other", ("A",)), EXAM, "its key names"),
        (task(), KeyRecord("MedExam-1-p1", ()), EXAM, "key is empty"),
        (task(), KeyRecord("MedExam-1-p1", ("a",)), EXAM, "not an option letter"),
        (task(), KeyRecord("MedExam-1-p1", ("A", "B")), EXAM, "2 references"),
    ],
)
def test_bad_items_name_their_problem(
    t: TaskRecord, key: KeyRecord, info: DatasetInfo | None, phrase: str
) -> None:
    with pytest.raises(InvalidArgument, match=phrase):
        validate_item(t, key, info)


def test_content_hash_changes_with_reference_and_prompt_only() -> None:
    base = content_hash(task(), KeyRecord("MedExam-1-p1", ("B",)))
    assert base == content_hash(task(), KeyRecord("MedExam-1-p1", ("B",)))
    assert base != content_hash(task(), KeyRecord("MedExam-1-p1", ("C",)))
    assert base != content_hash(task(question="题目 A. x B. z"), KeyRecord("MedExam-1-p1", ("B",)))


def test_freeze_orders_items_and_digests_versions() -> None:
    entries = [
        (task("MedExam-2-p1"), 1, KeyRecord("MedExam-2-p1", ("A",)), EXAM),
        (
            task("DDx-advanced-1", "DDx-advanced", "choice_multi"),
            1,
            KeyRecord("DDx-advanced-1", ("A", "C")),
            DDX,
        ),
        (task("MedExam-1-p1"), 3, KeyRecord("MedExam-1-p1", ("B",)), EXAM),
    ]
    pool = freeze_pool("p1", "llm", entries)
    assert [(p.ordinal, p.task.item_id) for p in pool.items] == [
        (0, "DDx-advanced-1"),
        (1, "MedExam-1-p1"),
        (2, "MedExam-2-p1"),
    ]
    assert pool.dataset_counts == (("DDx-advanced", 1), ("MedExam", 2))
    assert freeze_pool("p1", "llm", reversed(entries)).digest == pool.digest
    bumped = [(t, v + 1 if t.item_id == "MedExam-1-p1" else v, k, d) for t, v, k, d in entries]
    assert freeze_pool("p1", "llm", bumped).digest != pool.digest


def test_empty_pool_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="no items"):
        freeze_pool("p1", "llm", [])


def test_chunks_cover_every_item_once() -> None:
    entries = [
        (task(f"MedExam-{i}-p1"), 1, KeyRecord(f"MedExam-{i}-p1", ("A",)), EXAM)
        for i in range(2500)
    ]
    parts = chunks(freeze_pool("p", "llm", entries).items, 1000)
    assert [len(p) for p in parts] == [1000, 1000, 500]
    assert [p.ordinal for part in parts for p in part] == list(range(2500))


def test_chunks_hold_at_most_chunk_bytes_of_prompts_or_keys() -> None:
    """The largest items admitted: 1,000 of them would make a 256 MiB chunk document."""
    stem = "长" * (MAX_PROMPT_BYTES // 3 - 20)
    entries = [
        (
            task(f"MedExam-{i}-p1", question=stem + " A. x B. y"),
            1,
            KeyRecord(f"MedExam-{i}-p1", ("A",)),
            EXAM,
        )
        for i in range(100)
    ]
    parts = chunks(freeze_pool("p", "llm", entries).items)
    assert len(parts) > 1
    assert [p.ordinal for part in parts for p in part] == list(range(100))
    for part in parts:
        assert sum(len(p.task.question.encode()) for p in part) <= CHUNK_BYTES
    # Deterministic: the same pool gives the same chunks.
    again = chunks(freeze_pool("p", "llm", entries).items)
    assert [len(p) for p in again] == [len(p) for p in parts]


def test_an_item_too_large_for_every_hop_is_refused_at_import() -> None:
    question = "长" * (MAX_PROMPT_BYTES // 3) + "A. x B. y"
    with pytest.raises(ItemRejected, match=f"at most {MAX_PROMPT_BYTES}") as err:
        validate_item(task(question=question), KeyRecord("MedExam-1-p1", ("B",)), EXAM)
    assert err.value.field == "task.question"
    open_item = TaskRecord("MedQA-1", "MedExam", "llm", "问题 A. x B. y", "choice_single", "g")
    with pytest.raises(ItemRejected, match=f"at most {MAX_KEY_BYTES}") as err:
        validate_item(open_item, KeyRecord("MedQA-1", ("B",), key_points=("要点" * 20_000,)), EXAM)
    assert err.value.field == "key.reference"
    # At the limits exactly: admitted.
    at_limit = "长" * ((MAX_PROMPT_BYTES - 12) // 3) + " A. x B. y"
    validate_item(task(question=at_limit), KeyRecord("MedExam-1-p1", ("B",)), EXAM)


@pytest.mark.parametrize("value", ["item-1\n", "item-1\r\n", "\nitem-1"])
def test_an_id_with_a_line_break_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="is not valid"):
        check_id("item_id", value)
