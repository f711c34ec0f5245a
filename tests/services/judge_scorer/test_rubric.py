"""Rubric files: coverage of the registry's judged datasets, validation, lookup, content hashes."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from judge_scorer.core.rubric import (
    FALLBACK_ID,
    LOCK_FILE,
    RubricBook,
    RubricError,
    UnknownRubric,
    canonical_json,
    load_rubrics,
    lock_line,
    parse_rubric,
    sha256_hex,
)

REGISTRY = (
    Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/registry/medbench_v4.json"
)


def _judged_datasets() -> set[str]:
    """Registry datasets with a judge component in their metric or in one of their parts."""
    registry = json.loads(REGISTRY.read_text(encoding="utf-8"))
    judged = set()
    for dataset in registry["datasets"]:
        specs = [dataset["metric"], *(part["metric"] for part in dataset.get("parts", []))]
        if any("judge" in spec.split("+") for spec in specs):
            judged.add(dataset["name"])
    return judged


def _packaged() -> dict[str, dict[str, Any]]:
    folder = resources.files("judge_scorer.rubrics")
    return {
        entry.name: json.loads(entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def _valid() -> dict[str, Any]:
    return copy.deepcopy(_packaged()["generic.v1.json"])


def _write(folder: Path, name: str, data: dict[str, Any]) -> None:
    (folder / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_the_registry_has_judged_datasets_to_cover() -> None:
    judged = _judged_datasets()
    assert {"MedHC", "MedPopular", "MedRxCheck", "MedShield", "MedGen"} <= judged
    assert "MedExam" not in judged


def test_every_judge_scored_registry_dataset_is_listed_by_a_rubric() -> None:
    book = load_rubrics()
    missing = sorted(_judged_datasets() - book.datasets)
    assert not missing, f"judged datasets without a rubric: {missing}"
    for dataset in _judged_datasets():
        assert dataset in book.for_dataset(dataset).datasets


def test_rubrics_list_only_judge_scored_registry_datasets() -> None:
    extra = sorted(load_rubrics().datasets - _judged_datasets())
    assert not extra, f"rubrics list datasets the registry does not judge: {extra}"


@pytest.mark.parametrize(
    ("dataset", "rubric_id"),
    [
        ("MedHC", "generic"),
        ("MedShield", "safety_refusal"),
        ("MedDefend", "safety_refusal"),
        ("MedLongConv", "dialogue_context"),
        ("MedCallAPI", "agent_tool_use"),
        ("MedDecomp", "agent_planning"),
        ("MedPopular", "popular_science"),
        ("MedTeach", "teaching_case"),
        ("MedRecordGen", "clinical_document"),
        ("CMB-Clin-extended", "clinical_reasoning"),
        ("MedRxCheck", "quality_audit"),
        ("MedGen", "imaging_multimodal"),
        ("MedPsychCare", "psych_support"),
        ("MedRehab", "care_plan"),
    ],
)
def test_tasks_that_differ_get_their_own_rubric(dataset: str, rubric_id: str) -> None:
    assert load_rubrics().for_dataset(dataset).id == rubric_id


def test_a_dataset_no_rubric_lists_falls_back_to_the_generic_rubric() -> None:
    assert load_rubrics().for_dataset("MedSomethingNew").id == FALLBACK_ID


def test_packaged_rubric_files_ship_as_package_resources() -> None:
    folder = resources.files("judge_scorer.rubrics")
    names = {entry.name for entry in folder.iterdir()}
    assert "generic.v1.json" in names
    assert LOCK_FILE in names
    assert len(load_rubrics().rubrics) == len(_packaged()) >= 13


def test_each_file_is_named_after_its_rubric_and_round_trips() -> None:
    for name, data in _packaged().items():
        rubric = parse_rubric(data, name)
        assert name == f"{rubric.id}.v{rubric.version}.json"
        assert rubric.to_dict() == data


def test_each_rubric_is_chinese_and_justifies_its_scale() -> None:
    for rubric in load_rubrics().rubrics:
        low, high = rubric.scale.min, rubric.scale.max
        assert f"{low}–{high}" in rubric.description, rubric.label
        for text in (rubric.title, rubric.description, *rubric.instructions):
            assert any("\u4e00" <= ch <= "\u9fff" for ch in text), (rubric.label, text)
        assert abs(sum(c.weight for c in rubric.criteria) - 1) < 1e-9
        assert rubric.output_schema["required"][0] == "score"


def test_the_packaged_lock_records_every_packaged_rubric() -> None:
    lock = resources.files("judge_scorer.rubrics").joinpath(LOCK_FILE).read_text("utf-8")
    for rubric in load_rubrics().rubrics:
        assert lock_line(rubric) in lock.splitlines()


def test_content_hash_is_sha256_of_canonical_json() -> None:
    data = _valid()
    rubric = parse_rubric(data)
    expected = sha256_hex(
        json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )
    assert rubric.content_hash == expected
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_content_hash_ignores_key_order_and_formatting() -> None:
    data = _valid()
    reordered = dict(reversed(list(data.items())))
    again = json.loads(json.dumps(data, indent=4))
    hashes = {parse_rubric(d).content_hash for d in (data, reordered, again)}
    assert len(hashes) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["instructions"].__setitem__(0, d["instructions"][0] + "。"),
        lambda d: d["criteria"][0].__setitem__("description", "改动"),
        lambda d: d["scale"]["anchors"][1].__setitem__("description", "改动"),
        lambda d: d["datasets"].append("MedNew"),
        lambda d: d["output_schema"]["properties"]["rationale"].__setitem__("maxLength", 301),
        lambda d: d.__setitem__("title", d["title"] + " "),
    ],
)
def test_content_hash_changes_with_any_content_change(change: Any) -> None:
    data = _valid()
    changed = copy.deepcopy(data)
    change(changed)
    assert parse_rubric(changed).content_hash != parse_rubric(data).content_hash


def _drop(name: str) -> Any:
    return lambda d: d.pop(name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop("criteria"), "missing field(s) 'criteria'"),
        (_drop("output_schema"), "missing field(s) 'output_schema'"),
        (lambda d: d.__setitem__("colour", "red"), "unknown field(s) 'colour'"),
        (lambda d: d.__setitem__("version", 0), "'version' must be an integer"),
        (lambda d: d.__setitem__("version", "1"), "'version' must be an integer"),
        (lambda d: d.__setitem__("id", "Generic Rubric"), "'id' must be lower_snake_case"),
        (lambda d: d.__setitem__("title", ""), "'title' must be non-empty"),
        (lambda d: d["scale"].update(min=10, max=0), "bad scale: min (10) must be below max (0)"),
        (lambda d: d["scale"].update(min=5, max=5), "bad scale"),
        (lambda d: d["scale"].update(max="10"), "scale.max must be a finite number"),
        (lambda d: d["scale"].update(max=True), "scale.max must be a finite number"),
        (lambda d: d["scale"].pop("anchors"), "scale is missing 'anchors'"),
        (lambda d: d["scale"]["anchors"][1].update(score=11), "bad scale: anchor 11"),
        (lambda d: d["scale"]["anchors"].pop(), "anchors must describe both min and max"),
        (lambda d: d["scale"]["anchors"].reverse(), "anchor scores must increase"),
        (lambda d: d["criteria"][0].update(weight=0.1), "weights must sum to 1"),
        (lambda d: d["criteria"][0].update(weight=-0.4), "must be positive"),
        (lambda d: d["criteria"][0].pop("weight"), "criteria[0] must have exactly"),
        (lambda d: d["datasets"].append("MedHC"), "lists a dataset twice"),
        (lambda d: d.__setitem__("instructions", []), "'instructions' must be a non-empty list"),
        (lambda d: d["output_schema"].update(required=["rationale"]), "must require 'score'"),
        (
            lambda d: d["output_schema"]["properties"]["score"].update(maximum=100),
            "bad scale: output_schema score range [0, 100] differs",
        ),
    ],
)
def test_invalid_rubrics_are_refused_with_a_clear_message(change: Any, message: str) -> None:
    data = _valid()
    change(data)
    with pytest.raises(RubricError) as err:
        parse_rubric(data, "bad.json")
    assert message in str(err.value)
    assert str(err.value).startswith("bad.json")


def test_loading_a_folder_with_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.v1.json").write_text("{", encoding="utf-8")
    with pytest.raises(RubricError, match=r"broken\.v1\.json: not valid JSON"):
        load_rubrics(tmp_path)


def test_the_same_rubric_twice_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "generic.v1.json", _valid())
    _write(tmp_path, "copy.json", _valid())
    with pytest.raises(RubricError, match="duplicate rubric generic v1"):
        load_rubrics(tmp_path)


def test_two_contents_with_one_id_and_version_are_refused(tmp_path: Path) -> None:
    changed = _valid()
    changed["instructions"].append("新增一条评分说明。")
    _write(tmp_path, "generic.v1.json", _valid())
    _write(tmp_path, "generic.v1.edited.json", changed)
    with pytest.raises(RubricError, match="different content .* needs a new version"):
        load_rubrics(tmp_path)


def _lock(folder: Path, *data: dict[str, Any]) -> None:
    lines = [lock_line(parse_rubric(d)) for d in data]
    (folder / LOCK_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_published_rubric_edited_in_place_is_refused(tmp_path: Path) -> None:
    original = _valid()
    _lock(tmp_path, original)
    edited = _valid()
    edited["criteria"][0]["description"] = "悄悄改动了标准"
    _write(tmp_path, "generic.v1.json", edited)
    with pytest.raises(RubricError, match="generic v1 changed after it was published"):
        load_rubrics(tmp_path)


def test_a_rubric_missing_from_the_lock_is_refused_with_the_line_to_add(tmp_path: Path) -> None:
    _lock(tmp_path, _valid())
    newer = _valid()
    newer["version"] = 2
    _write(tmp_path, "generic.v1.json", _valid())
    _write(tmp_path, "generic.v2.json", newer)
    with pytest.raises(RubricError, match="not in published.lock") as err:
        load_rubrics(tmp_path)
    assert lock_line(parse_rubric(newer)) in str(err.value)


def test_a_published_rubric_that_disappeared_is_refused(tmp_path: Path) -> None:
    other = _valid()
    other["version"] = 2
    _lock(tmp_path, _valid(), other)
    _write(tmp_path, "generic.v1.json", _valid())
    with pytest.raises(RubricError, match="missing: generic v2"):
        load_rubrics(tmp_path)


def test_a_malformed_lock_line_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "generic.v1.json", _valid())
    (tmp_path / LOCK_FILE).write_text("generic one abc\n", encoding="utf-8")
    with pytest.raises(RubricError, match=r"published\.lock:1"):
        load_rubrics(tmp_path)


def test_two_rubrics_claiming_one_dataset_are_refused(tmp_path: Path) -> None:
    other = _valid()
    other["id"] = "other"
    other["datasets"] = ["MedHC"]
    _write(tmp_path, "generic.v1.json", _valid())
    _write(tmp_path, "other.v1.json", other)
    with pytest.raises(RubricError, match="'MedHC' is listed by the latest versions of both"):
        load_rubrics(tmp_path)


def test_the_latest_version_is_the_default_and_older_ones_stay_addressable(
    tmp_path: Path,
) -> None:
    newer = _valid()
    newer["version"] = 2
    newer["instructions"].append("第二版新增的评分说明。")
    _write(tmp_path, "generic.v1.json", _valid())
    _write(tmp_path, "generic.v2.json", newer)
    book = load_rubrics(tmp_path)
    assert book.for_dataset("MedHC").version == 2
    assert book.for_dataset("MedHC", version=1).version == 1
    assert book.get("generic").version == 2
    assert book.get("generic", 1).content_hash != book.get("generic", 2).content_hash


def test_unknown_versions_and_ids_raise_unknown_rubric() -> None:
    book = load_rubrics()
    with pytest.raises(UnknownRubric, match="has no version 99"):
        book.for_dataset("MedHC", version=99)
    with pytest.raises(UnknownRubric, match="no rubric 'nope'"):
        book.get("nope")


def test_without_a_fallback_an_unlisted_dataset_is_unknown() -> None:
    data = _valid()
    data["id"] = "only"
    book = RubricBook((parse_rubric(data),))
    with pytest.raises(UnknownRubric, match="no rubric lists dataset 'MedNew'"):
        book.for_dataset("MedNew")


def test_a_dataset_added_in_a_later_version_is_not_served_by_an_older_one() -> None:
    first = _valid()
    first["id"] = "special"
    first["datasets"] = ["MedA"]
    second = copy.deepcopy(first)
    second["version"] = 2
    second["datasets"] = ["MedA", "MedB"]
    book = RubricBook((parse_rubric(first), parse_rubric(second)))
    assert book.for_dataset("MedB").version == 2
    with pytest.raises(UnknownRubric, match="special v1 does not list dataset 'MedB'"):
        book.for_dataset("MedB", version=1)
