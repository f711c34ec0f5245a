"""Tests for the MedBench v4 registry data and its validation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotator.core.registry import (
    Registry,
    RegistryError,
    UnknownEntry,
    load_registry,
    normalise_source,
    parse_registry,
)
from rotator.registry import DEFAULT_REGISTRY_PATH
from tests.shared_data import shared_path

REPO = Path(__file__).resolve().parents[3]
POOL_TRACKS = {"llm": "llm", "vlm": "multimodal", "agent": "agent"}
SHUFFLED = {"MedExam", "MedSafety", "MedEthics", "MedRxCheck"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(DEFAULT_REGISTRY_PATH)


@pytest.fixture
def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_REGISTRY_PATH.read_text(encoding="utf-8"))
    return copy.deepcopy(data)


def test_tracks_hold_36_10_and_14_datasets(registry: Registry) -> None:
    counts = {track.code: len(registry.datasets_in(track.code)) for track in registry.tracks}
    assert counts == {"llm": 36, "multimodal": 10, "agent": 14}


def test_tracks_have_5_3_and_6_dimensions(registry: Registry) -> None:
    counts = {track.code: len(registry.dimensions_in(track.code)) for track in registry.tracks}
    assert counts == {"llm": 5, "multimodal": 3, "agent": 6}


def test_llm_and_agent_dimensions_carry_the_platform_names(registry: Registry) -> None:
    assert [d.name_zh for d in registry.dimensions_in("llm")] == [
        "医学知识问答",
        "医学语言生成",
        "复杂医学推理",
        "医学语言理解",
        "医疗安全和伦理",
    ]
    assert [d.name_zh for d in registry.dimensions_in("agent")] == [
        "临床任务规划与推理",
        "医疗工具调用与执行",
        "医疗场景感知与交互",
        "记忆与上下文保持",
        "医疗多智能体协作",
        "医疗安全伦理与合规",
    ]
    multimodal = registry.dimensions_in("multimodal")
    assert [d.code for d in multimodal] == [
        "perception",
        "cross_modal_understanding",
        "cross_modal_reasoning",
    ]
    assert all("our definition" in d.note.lower() for d in multimodal)


def test_every_dataset_is_in_an_existing_dimension_of_its_track(registry: Registry) -> None:
    for dataset in registry.datasets:
        assert registry.dimension(dataset.dimension).track == dataset.track


def test_llm_dimension_sizes_match_the_leaderboard_tabs(registry: Registry) -> None:
    sizes = {
        d.code: sum(1 for x in registry.datasets if x.dimension == d.code)
        for d in registry.dimensions_in("llm")
    }
    assert sizes == {
        "knowledge_qa": 10,
        "language_generation": 5,
        "complex_reasoning": 10,
        "language_understanding": 9,
        "safety_ethics": 2,
    }


def test_only_the_shuffled_sets_use_the_all_permutations_rule(registry: Registry) -> None:
    shuffled = {d.name for d in registry.datasets if d.dataset_rule == "all_permutations"}
    assert shuffled == SHUFFLED
    assert all(registry.dataset(name).permutations == 5 for name in SHUFFLED)
    assert all(d.permutations == 1 for d in registry.datasets if d.name not in SHUFFLED)


@pytest.mark.parametrize(
    ("name", "answer_format", "metric"),
    [
        ("MedExam", "choice_single", "choice_single"),
        ("DDx-advanced", "choice_multi", "choice_multi"),
        ("MedHC", "free_text", "key_point_recall+judge"),
        ("MedPopular", "free_text", "judge"),
        ("MedReportQC", "json_object", "micro_f1+key_point_recall+judge"),
        ("MedHG", "departments", "department_set_accuracy"),
        ("MedInsureCalc", "json_object", "field_accuracy"),
        ("MedIntentID", "label", "label_accuracy"),
        ("MedDecomp", "free_text", "judge"),
    ],
)
def test_datasets_use_their_current_v4_metric(
    registry: Registry, name: str, answer_format: str, metric: str
) -> None:
    dataset = registry.dataset(name)
    assert (dataset.answer_format, dataset.metric) == (answer_format, metric)


def test_medrxcheck_is_one_dataset_with_three_parts(registry: Registry) -> None:
    dataset = registry.dataset("MedRxCheck")
    assert [(p.name, p.answer_format, p.permutations, p.pool_lines) for p in dataset.parts] == [
        ("MedRxCheck_SCQ", "choice_single", 5, 150),
        ("MedRxCheck_MSQ", "choice_multi", 1, 30),
        ("MedRxCheck_SQ", "free_text", 1, 30),
    ]
    assert dataset.answer_formats == {"choice_single", "choice_multi", "free_text"}
    assert dataset.part_for_format("choice_multi").metric == "choice_multi"
    assert registry.dataset_for_source("MedRxCheck_V4_MSQ")[1].name == "MedRxCheck_MSQ"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("MedExam_V4", "MedExam"),
        ("MedTreat_v4", "MedTreat"),
        ("MedRxCheck_V4_SCQ", "MedRxCheck_SCQ"),
        ("MedPopular", "MedPopular"),
        ("CTR-QC", "CTR-QC"),
    ],
)
def test_normalise_source_drops_only_the_version_tag(tag: str, expected: str) -> None:
    assert normalise_source(tag) == expected


def _pool_sources() -> list[tuple[str, str, str]]:
    testpool = shared_path("medbench-data", "medbench-v4-testpool")
    found = []
    for folder in sorted(POOL_TRACKS):
        for path in sorted((testpool / folder).glob("*.jsonl")):
            with path.open(encoding="utf-8") as lines:
                tags = {json.loads(line)["other"]["source"] for line in lines if line.strip()}
            found += [(folder, path.stem, tag) for tag in sorted(tags)]
    return found


def test_every_pool_source_resolves_to_a_dataset_of_the_right_track(registry: Registry) -> None:
    sources = _pool_sources()
    assert len({(folder, stem) for folder, stem, _ in sources}) == 38 + 10 + 14
    resolved = {}
    for folder, stem, tag in sources:
        dataset, part = registry.dataset_for_source(tag)
        assert dataset.track == POOL_TRACKS[folder], (folder, stem, tag)
        resolved[stem] = dataset.name
    assert {stem for stem, name in resolved.items() if name == "MedRxCheck"} == {
        "MedRxCheck_SCQ",
        "MedRxCheck_MSQ",
        "MedRxCheck_SQ",
    }
    assert set(resolved.values()) == {d.name for d in registry.datasets}


def test_unknown_dimension_is_reported(raw: dict[str, Any]) -> None:
    raw["datasets"][0]["dimension"] = "bedside_manner"
    with pytest.raises(RegistryError, match="unknown dimension 'bedside_manner'"):
        parse_registry(raw)


def test_duplicate_dataset_is_reported(raw: dict[str, Any]) -> None:
    raw["datasets"].append(copy.deepcopy(raw["datasets"][0]))
    with pytest.raises(RegistryError, match=r"duplicate dataset \['MedExam'\]"):
        parse_registry(raw)


def test_missing_dataset_breaks_the_declared_counts(raw: dict[str, Any]) -> None:
    raw["datasets"] = [d for d in raw["datasets"] if d["name"] != "MedTerm"]
    with pytest.raises(RegistryError, match="track 'llm': declares 36 datasets"):
        parse_registry(raw)


def test_dataset_moved_to_another_dimension_breaks_that_dimension_count(
    raw: dict[str, Any],
) -> None:
    medterm = next(d for d in raw["datasets"] if d["name"] == "MedTerm")
    medterm["dimension"] = "knowledge_qa"
    with pytest.raises(RegistryError, match="dimension 'knowledge_qa': declares 10 datasets"):
        parse_registry(raw)


def test_dimension_of_another_track_is_reported(raw: dict[str, Any]) -> None:
    raw["datasets"][0]["dimension"] = "tool_use"
    with pytest.raises(RegistryError, match="dimension 'tool_use' of track 'agent'"):
        parse_registry(raw)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("answer_format", "essay", "unknown answer_format 'essay'"),
        ("metric", "choice_single+sacrebleu", r"unknown metric component\(s\) \['sacrebleu'\]"),
        ("metric", "choice_single+choice_single", "names a component twice"),
        ("metric", "choice_single+box_iou", r"scores answers in format \['boxes'\]"),
        ("metric", "judge", "its metric must hold 'choice_single'"),
        ("dataset_rule", "median", "unknown dataset_rule 'median'"),
        ("dataset_rule", "mean", "does not fit permutations"),
        ("permutations", "5", "field 'permutations' must be int"),
        ("name", "Med Exam", r"must be 1-64 characters of \[A-Za-z0-9._-\]"),
        ("track", "vision", "unknown track 'vision'"),
    ],
)
def test_malformed_dataset_fields_are_reported_with_the_field(
    raw: dict[str, Any], field: str, value: str, message: str
) -> None:
    raw["datasets"][0][field] = value
    with pytest.raises(RegistryError, match=message) as caught:
        parse_registry(raw)
    assert caught.value.field == field


def test_split_dataset_metric_must_cover_its_parts(raw: dict[str, Any]) -> None:
    rx = next(d for d in raw["datasets"] if d["name"] == "MedRxCheck")
    rx["metric"] = "choice_single+choice_multi"
    with pytest.raises(RegistryError, match="should list its parts' components"):
        parse_registry(raw)


def test_a_pool_source_claimed_twice_is_reported(raw: dict[str, Any]) -> None:
    raw["datasets"][1]["source_aliases"] = ["MedExam"]
    with pytest.raises(RegistryError, match=r"duplicate pool source \['MedExam'\]"):
        parse_registry(raw)


def test_invalid_json_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_registry(path)


def test_unknown_lookups_raise_an_error_that_is_both_key_and_registry_error(
    registry: Registry,
) -> None:
    lookups: list[Callable[[], object]] = [
        lambda: registry.dataset("MedNothing"),
        lambda: registry.dimension("bedside_manner"),
        lambda: registry.track("audio"),
        lambda: registry.dataset("MedExam").part_for_format("free_text"),
        lambda: registry.dataset_for_source("MedNothing_V4"),
    ]
    for lookup in lookups:
        with pytest.raises(UnknownEntry) as err:
            lookup()
        assert isinstance(err.value, KeyError) and isinstance(err.value, RegistryError)
        assert not str(err.value).startswith('"')


def _specialty(raw: dict[str, Any], code: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in raw["specialties"] if s["code"] == code)
    return found


def test_specialties_are_24_primary_and_91_secondary(registry: Registry) -> None:
    primaries = [s for s in registry.specialties if s.parent is None]
    secondaries = [s for s in registry.specialties if s.parent is not None]
    assert (len(primaries), len(secondaries)) == (24, 91)
    assert all(s.is_primary for s in primaries) and not any(s.is_primary for s in secondaries)
    assert {"IM", "SURG", "OBGYN", "PED", "TCM", "PHARM", "ETH"} <= {s.code for s in primaries}


def test_every_secondary_specialty_sits_under_a_primary_its_code_names(
    registry: Registry,
) -> None:
    for specialty in registry.specialties:
        if specialty.parent is not None:
            assert registry.specialty(specialty.parent).parent is None
            assert specialty.code.startswith(specialty.parent + ".")
    primaries = {s.code for s in registry.specialties if s.parent is None}
    assert primaries == {s.parent for s in registry.specialties if s.parent is not None}


def test_specialty_codes_are_ascii_and_names_are_filled_in(registry: Registry) -> None:
    for specialty in registry.specialties:
        assert specialty.code.isascii() and specialty.name.isascii(), specialty
        assert specialty.name and specialty.name_zh and not specialty.name_zh.isascii(), specialty


def test_specialty_taxonomy_is_marked_as_our_own_definition(raw: dict[str, Any]) -> None:
    assert "our own definition" in raw["specialties_note"]


def test_specialty_lookups_resolve_codes_and_primaries(registry: Registry) -> None:
    cardiology = registry.specialty("IM.CARD")
    assert (cardiology.name, cardiology.name_zh, cardiology.parent) == (
        "Cardiology",
        "心血管内科",
        "IM",
    )
    assert registry.specialty("IM").name_zh == "内科"
    assert registry.primary_specialty("IM.CARD") == "IM"
    assert registry.primary_specialty("SURG.NEUR") == "SURG"
    assert registry.primary_specialty("IM") == "IM"
    for lookup in (registry.specialty, registry.primary_specialty):
        with pytest.raises(UnknownEntry, match="unknown specialty 'IM.NOPE'"):
            lookup("IM.NOPE")


def test_duplicate_specialty_code_is_reported(raw: dict[str, Any]) -> None:
    raw["specialties"].append(copy.deepcopy(_specialty(raw, "IM.CARD")))
    with pytest.raises(RegistryError, match=r"duplicate specialty \['IM.CARD'\]"):
        parse_registry(raw)


def test_secondary_specialty_with_an_unknown_parent_is_reported(raw: dict[str, Any]) -> None:
    raw["specialties"].append(
        {"code": "ZZ.CARD", "name": "Nothing", "name_zh": "无", "parent": "ZZ"}
    )
    with pytest.raises(RegistryError, match="specialty 'ZZ.CARD': unknown parent 'ZZ'"):
        parse_registry(raw)


def test_secondary_specialty_under_another_secondary_is_reported(raw: dict[str, Any]) -> None:
    _specialty(raw, "IM.CARD")["parent"] = "IM.GI"
    with pytest.raises(RegistryError, match="specialty 'IM.CARD': a secondary specialty's parent"):
        parse_registry(raw)


def test_primary_specialty_with_a_parent_is_reported(raw: dict[str, Any]) -> None:
    _specialty(raw, "PED")["parent"] = "IM"
    with pytest.raises(RegistryError, match="specialty 'PED': a primary specialty has no parent"):
        parse_registry(raw)


def test_malformed_specialty_code_is_reported(raw: dict[str, Any]) -> None:
    _specialty(raw, "IM.CARD")["code"] = "im.card"
    with pytest.raises(RegistryError, match="specialty 'im.card': code must be upper-case ASCII"):
        parse_registry(raw)


@pytest.mark.parametrize(
    ("drop", "found"),
    [("IM.CARD", "24 and 90"), ("GP", "23 and 91")],
)
def test_specialty_counts_other_than_24_and_91_are_reported(
    raw: dict[str, Any], drop: str, found: str
) -> None:
    raw["specialties"] = [
        s for s in raw["specialties"] if s["code"] != drop and s["parent"] != drop
    ]
    if drop == "GP":
        # Keep 91 secondaries: move GP's two under IM.
        raw["specialties"] += [
            {"code": "IM.FAM", "name": "Family Medicine", "name_zh": "家庭医学", "parent": "IM"},
            {"code": "IM.COMM", "name": "Community Care", "name_zh": "社区卫生", "parent": "IM"},
        ]
    with pytest.raises(
        RegistryError, match=f"expected 24 primary and 91 secondary specialties, found {found}"
    ):
        parse_registry(raw)


def test_registry_without_specialties_is_reported(raw: dict[str, Any]) -> None:
    del raw["specialties"]
    with pytest.raises(RegistryError, match="registry: missing field 'specialties'"):
        parse_registry(raw)
