"""The stored batch format: packed columns that read back exactly."""

from __future__ import annotations

from typing import Any

import bson
import pytest

from aggregator.adapters.score_codec import entries, entry_of, pack, unpack


def score(item: str, **extra: Any) -> dict[str, Any]:
    doc = {
        "item_id": item,
        "dataset": "MedExam",
        "dimension": "knowledge_qa",
        "group_id": item,
        "component": "metric",
        "metric": "choice_single",
        "score": 1.0,
        "parsed": "A",
        "components": [["choice_single", 1.0]],
        "merge_rule": "mean",
        "counts": [0, 0, 0],
    }
    doc.update(extra)
    return doc


SCORES = [
    score("a", prompt_hash="0123456789abcdef0123456789abcdef"),
    score(
        "b-p1",
        group_id="b",
        score=0.0,
        parsed="答：C，\\n换行",
        components=[["choice_single", 0.0]],
    ),
    score(
        "c",
        dataset="MedHC",
        component="judge",
        metric="judge",
        score=0.35,
        parsed="",
        components=[["judge", 0.35]],
        judge={"models": ["a", "b"], "rubric": "generic.v1", "judge_scores": [0.3, 0.4]},
    ),
    score("d", components=[["key_point_recall", 0.5], ["rouge_l", 0.25]], score=0.375),
    score("e", component="judge", score=0.0, unscored=True, components=[["judge", 0.0]]),
    score("f", metric="micro_f1", counts=[3, 1, 2], score=0.666),
]


def roundtrip(doc: dict[str, Any]) -> dict[str, Any]:
    """Through BSON, as MongoDB stores it."""
    return bson.decode(bson.encode(doc))


def test_unpack_gives_back_every_field() -> None:
    stored = roundtrip(pack(SCORES))
    back = unpack(stored)
    assert back == [{**s, "prompt_hash": s.get("prompt_hash", "")} for s in SCORES]


def test_entries_match_entries_of_the_documents() -> None:
    stored = roundtrip(pack(SCORES))
    assert list(entries(stored)) == [entry_of(s) for s in SCORES]


def test_prompt_hashes_are_stored_only_when_known() -> None:
    assert "prompt_hashes" not in pack([score("x")])
    assert pack(SCORES)["prompt_hashes"][:2] == ["0123456789abcdef0123456789abcdef", ""]


def test_format_1_documents_still_read() -> None:
    old = {"scores": SCORES}
    assert unpack(old) == SCORES
    assert list(entries(old)) == [entry_of(s) for s in SCORES]


def test_group_ids_are_stored_only_when_they_differ() -> None:
    assert "group_ids" not in pack([score("a"), score("x")])
    assert pack(SCORES)["group_ids"][1] == "b"


def test_scores_are_exact_doubles() -> None:
    odd = [score("a", score=0.1 + 0.2, components=[["m", 0.1 + 0.2]])]
    [entry] = entries(roundtrip(pack(odd)))
    assert entry.score == 0.1 + 0.2 and entry.components == (("m", 0.1 + 0.2),)


def test_an_empty_batch_packs() -> None:
    assert unpack(roundtrip(pack([]))) == []
    with pytest.raises(KeyError):
        pack([{"dataset": "x"}])
