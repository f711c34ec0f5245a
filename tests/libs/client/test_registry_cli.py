"""The maintainer CLI's registry commands, offline: reading a dataset file (every problem named
with the file), and a version shown as a registry file that is the registry it came from."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from medbench_client.registry_cli import (
    dataset_from_file,
    dataset_json,
    registry_document,
    summary,
    version_line,
)
from rotator.core.registry import parse_registry
from rotator.core.versions import seed_version
from rotator.entrypoints import convert
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.usecases.registry import Shown

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def shown() -> Shown:
    seed = seed_version(DEFAULT_REGISTRY_PATH.read_bytes(), "medbench_v4.json", NOW)
    return Shown(seed.info, seed.data, current=True)


def write(tmp_path: Path, data: object, name: str = "d.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_a_dataset_file_reads_into_the_message_and_prints_back_the_same(tmp_path: Path) -> None:
    entry = next(d for d in shown().data["datasets"] if d["name"] == "MedRxCheck")
    dataset = dataset_from_file(write(tmp_path, entry))
    assert (dataset.name, len(dataset.parts), dataset.parts[2].source_aliases) == (
        "MedRxCheck",
        3,
        ["MedRxCheck"],
    )
    printed = json.loads(dataset_json(dataset))
    # Empty lists are left out when printed; everything else is the entry as written.
    assert printed == {
        **entry,
        "parts": [{k: v for k, v in p.items() if v != []} for p in entry["parts"]],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "Expecting property name"),
        ("[1]", "a dataset is a JSON object"),
        ({"datasets": []}, "this is a whole registry"),
        ({"name": "X", "colour": "blue"}, "colour"),
        ({"name": "X", "permutations": "many"}, "permutations"),
    ],
)
def test_a_bad_dataset_file_is_named_with_the_reason(
    tmp_path: Path, content: object, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as caught:
        dataset_from_file(path)
    assert str(caught.value).startswith(str(path))


def test_a_version_shown_as_a_file_is_the_registry_it_came_from() -> None:
    original = shown()
    response = convert.registry_response(original)
    assert response.version.current and response.version.version == 1
    document = registry_document(response)
    registry = parse_registry(document)
    assert registry == parse_registry(original.data)
    assert [d["name"] for d in document["datasets"]] == [
        d["name"] for d in original.data["datasets"]
    ]


def test_the_summary_lists_every_dataset_under_its_dimension_and_versions_mark_the_current() -> (
    None
):
    response = convert.registry_response(shown())
    text = summary(response)
    assert text.startswith("registry version 1 (current): MedBench v4, seeded from")
    assert text.count("\n    ") == 60
    assert "  knowledge_qa (医学知识问答): 10\n    MedExam " in text
    line = version_line(response.version)
    assert line.startswith("*    1  2026-12-07 09:00:00  seed") and "seeded from" in line
