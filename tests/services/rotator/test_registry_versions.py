"""Registry versions, pure rules: the seed, a dataset added or revised as the next version's
document, and every refusal naming the dataset's field."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from rotator.core.catalog import DatasetCatalog
from rotator.core.registry import METRIC_COMPONENTS, RegistryError, parse_registry
from rotator.core.versions import (
    DatasetRejected,
    StoredVersion,
    canonical_dataset,
    digest_of,
    is_retry,
    next_version,
    revise,
    seed_version,
    unchanged,
)
from rotator.registry import DEFAULT_REGISTRY_PATH

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
RAW = DEFAULT_REGISTRY_PATH.read_bytes()


@pytest.fixture
def data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RAW)
    return loaded


def new_dataset(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "MedNewQA",
        "track": "llm",
        "dimension": "knowledge_qa",
        "description": "A dataset added at run time",
        "answer_format": "choice_single",
        "metric": "choice_single",
        "dataset_rule": "mean",
        "permutations": 1,
        "pool_lines": 40,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in data["datasets"] if d["name"] == name)
    return copy.deepcopy(found)


def names(data: dict[str, Any]) -> list[str]:
    return [d["name"] for d in data["datasets"]]


def counts(data: dict[str, Any], kind: str) -> dict[str, int]:
    return {x["code"]: x["dataset_count"] for x in data[kind]}


# -- the seed ---------------------------------------------------------------------------------


def test_the_seed_is_version_1_and_names_the_label_pools_recorded_before_versions() -> None:
    seed = seed_version(RAW, "medbench_v4.json", NOW)
    assert (seed.info.number, seed.info.action, seed.info.created_by) == (1, "seed", "seed")
    assert seed.info.change == "seeded from medbench_v4.json"
    assert seed.info.label == "1"
    # The label the rotator gave the same file when it only read it at start-up.
    assert seed.info.legacy_label == DatasetCatalog.from_json(RAW).version
    assert seed.info.legacy_label.startswith("v4+") and len(seed.info.legacy_label) == 15
    assert seed.info.digest == digest_of(json.loads(RAW))


def test_a_broken_seed_file_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="not valid JSON"):
        seed_version(b"{", "broken.json", NOW)
    with pytest.raises(RegistryError, match="missing field 'tracks'"):
        seed_version(b"{}", "empty.json", NOW)


def test_the_digest_ignores_key_order_and_sees_any_change(data: dict[str, Any]) -> None:
    reordered = dict(reversed(list(data.items())))
    assert digest_of(reordered) == digest_of(data)
    changed = copy.deepcopy(data)
    changed["datasets"][0]["metric"] = "choice_single"
    changed["datasets"][0]["pool_lines"] += 1
    assert digest_of(changed) != digest_of(data)


# -- adding and revising ----------------------------------------------------------------------


def test_a_new_dataset_goes_after_its_dimension_and_the_counts_follow(
    data: dict[str, Any],
) -> None:
    before = names(data)
    revision = revise(data, new_dataset())
    assert revision.added and revision.dataset.name == "MedNewQA"
    after = names(revision.data)
    last_knowledge_qa = max(
        n for n, d in enumerate(data["datasets"]) if d["dimension"] == "knowledge_qa"
    )
    assert after == before[: last_knowledge_qa + 1] + ["MedNewQA"] + before[last_knowledge_qa + 1 :]
    assert counts(revision.data, "tracks")["llm"] == counts(data, "tracks")["llm"] + 1
    assert (
        counts(revision.data, "dimensions")["knowledge_qa"]
        == counts(data, "dimensions")["knowledge_qa"] + 1
    )
    # The input document is left alone, and the result is a valid registry.
    assert names(data) == before
    assert parse_registry(revision.data).dataset("MedNewQA").metric == "choice_single"


def test_a_revision_replaces_the_dataset_in_place(data: dict[str, Any]) -> None:
    revised = entry(data, "MedHC")
    revised["metric"] = "judge"
    revised["source_aliases"] = ["MedHealthConsult"]
    revision = revise(data, revised)
    assert not revision.added
    assert names(revision.data) == names(data)
    registry = parse_registry(revision.data)
    assert registry.dataset("MedHC").metric == "judge"
    assert registry.dataset_for_source("MedHealthConsult_V4")[0].name == "MedHC"
    assert counts(revision.data, "dimensions") == counts(data, "dimensions")


def test_a_revision_to_another_dimension_moves_the_dataset_and_both_counts(
    data: dict[str, Any],
) -> None:
    revised = entry(data, "MedExam")
    revised["dimension"] = "safety_ethics"
    revision = revise(data, revised)
    after = names(revision.data)
    assert after.index("MedExam") == after.index("MedEthics") + 1
    dims = counts(revision.data, "dimensions")
    assert dims["knowledge_qa"] == counts(data, "dimensions")["knowledge_qa"] - 1
    assert dims["safety_ethics"] == counts(data, "dimensions")["safety_ethics"] + 1
    assert counts(revision.data, "tracks") == counts(data, "tracks")


def test_a_split_dataset_is_revised_part_by_part(data: dict[str, Any]) -> None:
    revised = entry(data, "MedRxCheck")
    revised["parts"][2]["metric"] = "judge"
    revised["metric"] = "choice_single+choice_multi+judge"
    revision = revise(data, revised)
    part = parse_registry(revision.data).dataset("MedRxCheck").parts[2]
    assert (part.name, part.metric) == ("MedRxCheck_SQ", "judge")


def test_the_stored_entry_drops_empty_fields_and_keeps_registry_order() -> None:
    raw = {"pool_lines": 3, "name": "X", "note": "", "source_aliases": [], "parts": []}
    assert list(canonical_dataset(raw)) == ["name", "pool_lines"]


def test_an_equal_dataset_is_unchanged_whatever_empty_fields_it_spells_out(
    data: dict[str, Any],
) -> None:
    same = entry(data, "MedRxCheck")
    same["note"] = same.get("note", "")
    same["source_aliases"] = []
    assert unchanged(data, same)
    same["pool_lines"] += 0
    other = entry(data, "MedRxCheck")
    other["description"] += "."
    assert not unchanged(data, other)
    assert not unchanged(data, new_dataset())


# -- refusals name the field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"track": "vision"}, "track", r"unknown track 'vision'; known: \['llm'"),
        ({"dimension": "perception"}, "dimension", "unknown dimension 'perception' of track llm"),
        ({"dimension": None}, "dimension", "missing field 'dimension'"),
        ({"metric": "choice_single+gleu"}, "metric", r"unknown metric component\(s\) \['gleu'\]"),
        ({"answer_format": "essay"}, "answer_format", "unknown answer_format 'essay'"),
        ({"answer_format": "mixed"}, "answer_format", "'mixed' needs a 'parts' list"),
        ({"answer_format": "free_text"}, "metric", r"scores answers in format \['choice_single'\]"),
        ({"metric": "judge"}, "metric", "its metric must hold 'choice_single'"),
        ({"dataset_rule": "median"}, "dataset_rule", "unknown dataset_rule 'median'"),
        ({"permutations": 5}, "dataset_rule", "shuffled datasets need 'all_permutations'"),
        ({"permutations": "5"}, "permutations", "must be int"),
        ({"pool_lines": 0}, "pool_lines", "pool_lines must be positive"),
        ({"name": "Med QA"}, "name", r"1-64 characters of \[A-Za-z0-9._-\]"),
        ({"name": "MedExam_V4x", "source_aliases": ["MedHC"]}, "source_aliases", "MedHC"),
        ({"name": "MedHC_extra", "source_aliases": [""]}, "source_aliases", "non-empty"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_a_dataset_the_registry_cannot_take_is_refused_naming_its_field(
    data: dict[str, Any], changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(DatasetRejected, match=message) as caught:
        revise(data, new_dataset(**changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"dataset.{field}: ")


def test_a_part_is_named_by_its_index(data: dict[str, Any]) -> None:
    revised = entry(data, "MedRxCheck")
    revised["parts"][1]["metric"] = "choice_multi+bleuu"
    with pytest.raises(DatasetRejected) as caught:
        revise(data, revised)
    assert caught.value.field == "parts[1].metric"
    revised = entry(data, "MedRxCheck")
    revised["parts"][2]["name"] = "MedExam"
    with pytest.raises(DatasetRejected, match="already belongs to dataset MedExam") as caught:
        revise(data, revised)
    assert caught.value.field == "parts[2].name"


def test_a_dataset_named_like_another_ones_pool_source_is_refused(data: dict[str, Any]) -> None:
    # MedRxCheck_SQ also answers to the tag "MedRxCheck"; a dataset "MedRxCheck_SCQ" would
    # take a part's tag.
    with pytest.raises(DatasetRejected, match="already belongs to dataset MedRxCheck") as caught:
        revise(data, new_dataset(name="MedRxCheck_SCQ"))
    assert caught.value.field == "name"


def test_a_dataset_never_moves_to_another_track(data: dict[str, Any]) -> None:
    moved = entry(data, "MedExam")
    moved["track"], moved["dimension"] = "agent", "tool_use"
    with pytest.raises(DatasetRejected, match="cannot move to another track") as caught:
        revise(data, moved)
    assert caught.value.field == "track"


def test_the_metric_components_are_the_metric_scorers_plus_the_judge() -> None:
    from metric_scorer.core.library import LIBRARY

    assert set(METRIC_COMPONENTS) == set(LIBRARY) | {"judge"}


def test_every_component_the_metric_scorer_has_can_be_put(data: dict[str, Any]) -> None:
    for n, component in enumerate(sorted(METRIC_COMPONENTS)):
        answer_format = {
            "choice_single": "choice_single",
            "choice_multi": "choice_multi",
            "box_iou": "boxes",
            "department_set_accuracy": "departments",
            "label_set_accuracy": "label_set",
        }.get(component, "free_text")
        dataset = new_dataset(name=f"MedNew{n}", answer_format=answer_format, metric=component)
        assert revise(data, dataset).dataset.metric == component


# -- versions ---------------------------------------------------------------------------------


def test_the_next_version_numbers_on_and_records_who_and_why(data: dict[str, Any]) -> None:
    seed = seed_version(RAW, "medbench_v4.json", NOW)
    made = next_version(seed, revise(seed.data, new_dataset()), "k1", "new QA set", NOW)
    assert (made.info.number, made.info.action, made.info.dataset) == (2, "add", "MedNewQA")
    assert (made.info.created_by, made.info.note) == ("k1", "new QA set")
    assert made.info.change == "added dataset MedNewQA"
    assert made.info.digest == digest_of(made.data) != seed.info.digest
    assert made.info.legacy_label == ""
    revised = entry(dict(made.data), "MedNewQA") | {"pool_lines": 41}
    third = next_version(made, revise(made.data, revised), "k2", "", NOW)
    assert (third.info.number, third.info.change) == (3, "revised dataset MedNewQA")


def test_a_retry_is_only_the_same_request(data: dict[str, Any]) -> None:
    seed = seed_version(RAW, "medbench_v4.json", NOW)
    made: StoredVersion = next_version(seed, revise(seed.data, new_dataset()), "k1", "why", NOW)
    assert is_retry(made, 1, new_dataset(), "k1", "why")
    assert not is_retry(made, 1, new_dataset(), "k2", "why")
    assert not is_retry(made, 1, new_dataset(), "k1", "another reason")
    assert not is_retry(made, 1, new_dataset(pool_lines=41), "k1", "why")
    assert not is_retry(made, 2, new_dataset(), "k1", "why")
