"""Task-bank readers: the shared MedBench v4 test pool, gold files, bad lines, mapped JSONL/CSV."""

from __future__ import annotations

import ast
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from medbench_client import importers
from medbench_client.importers import (
    FieldMapping,
    ImportRow,
    LineError,
    ReadResult,
    read_csv_mapped,
    read_jsonl_mapped,
    read_medbench_pool,
    summarise,
)
from tests.shared_data import shared_path

PERMUTED = {"MedExam", "MedSafety", "MedEthics", "MedRxCheck_SCQ"}
FILES_PER_TRACK = {"llm": 38, "agent": 14, "vlm": 10}


def _pool() -> Path:
    return shared_path("medbench-data", "medbench-v4-testpool")


def _write_jsonl(path: Path, objects: list[Any]) -> Path:
    path.write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8"
    )
    return path


def _line(qid: Any, question: str = "q", source: str = "Demo_V4", **extra: Any) -> dict[str, Any]:
    return {"question": question, "answer": "", "other": {"id": qid, "source": source}, **extra}


def _gold_from(pool_file: Path, gold_file: Path) -> list[dict[str, Any]]:
    """A gold file for pool_file: the same lines with an answer derived from the line number."""
    objects = [json.loads(line) for line in pool_file.read_text(encoding="utf-8").splitlines()]
    for n, obj in enumerate(objects, 1):
        obj["answer"] = f"<{'ABCDE'[n % 5]}>"
    _write_jsonl(gold_file, objects)
    return objects


def _errors_by_line(result: ReadResult) -> dict[int, list[LineError]]:
    by_line: dict[int, list[LineError]] = defaultdict(list)
    for error in result.errors:
        by_line[error.line].append(error)
    return dict(by_line)


# The shared MedBench v4 test pool


@pytest.mark.parametrize("track", sorted(FILES_PER_TRACK))
def test_every_shared_pool_file_reads_without_errors(track: str) -> None:
    files = sorted((_pool() / track).glob("*.jsonl"))
    assert len(files) == FILES_PER_TRACK[track]
    for path in files:
        result = read_medbench_pool(path, provenance="medbench-v4-testpool", licence="none")
        assert result.errors == (), (path.name, result.errors[:3])
        expected = 150 if path.stem in PERMUTED else 30
        assert len(result.rows) == expected, path.name
        assert [r.line for r in result.rows] == list(range(1, expected + 1))
        for row in result.rows:
            assert row.file == str(path)
            assert row.source and row.dataset == "" and row.answer_format == ""
            assert row.reference == ()
            assert row.question.strip()
            assert row.provenance == "medbench-v4-testpool" and row.licence == "none"
            assert not row.group_id.endswith(("_V4", "_v4"))
            assert not re.search(r"_[Vv]4-", row.item_id)
        ids = [r.item_id for r in result.rows]
        assert len(set(ids)) == len(ids), path.name
        groups: dict[str, list[ImportRow]] = defaultdict(list)
        for row in result.rows:
            groups[row.group_id].append(row)
        if path.stem in PERMUTED:
            assert len(groups) == 30
            for group_id, members in groups.items():
                assert [r.item_id for r in members] == [f"{group_id}-p{k}" for k in range(1, 6)]
        else:
            assert all(r.item_id == r.group_id for r in result.rows)
            assert not any(re.search(r"-p\d+$", i) for i in ids), path.name
        if track == "vlm":
            assert all(r.image_paths for r in result.rows), path.name
            assert all(isinstance(p, str) and p for r in result.rows for p in r.image_paths)
        else:
            assert all(r.image_paths == () for r in result.rows)


def test_single_string_image_paths_become_one_element_tuples() -> None:
    for name in ("MedOCR", "MedQC"):
        path = _pool() / "vlm" / f"{name}.jsonl"
        raw = [json.loads(line)["img_path"] for line in path.read_text("utf-8").splitlines()]
        assert all(isinstance(p, str) for p in raw)
        rows = read_medbench_pool(path).rows
        assert [r.image_paths for r in rows] == [(p,) for p in raw]


def test_item_ids_drop_the_version_suffix_and_keep_the_source_tag() -> None:
    rows = read_medbench_pool(_pool() / "llm" / "MedExam.jsonl").rows
    first = json.loads((_pool() / "llm" / "MedExam.jsonl").read_text("utf-8").splitlines()[0])
    assert rows[0].source == "MedExam_V4"
    assert rows[0].group_id == f"MedExam-{first['other']['id']}"
    assert rows[0].item_id == f"MedExam-{first['other']['id']}-p1"
    treat = read_medbench_pool(_pool() / "llm" / "MedTreat.jsonl").rows
    assert treat[0].source == "MedTreat_v4" and treat[0].item_id.startswith("MedTreat-")


def test_the_whole_pool_summarises_in_one_line() -> None:
    files = sorted(_pool().glob("*/*.jsonl"))
    text = summarise(ReadResult.combine(read_medbench_pool(p) for p in files))
    assert text == "2340 rows (1860 questions) read from 62 files, 0 errors"


# Gold files


def test_a_gold_file_keys_each_pool_line_in_order(tmp_path: Path) -> None:
    pool_file = _pool() / "llm" / "MedExam.jsonl"
    gold = _gold_from(pool_file, tmp_path / "gold.jsonl")
    result = read_medbench_pool(pool_file, tmp_path / "gold.jsonl")
    assert result.errors == ()
    assert [r.reference for r in result.rows] == [(g["answer"],) for g in gold]
    unkeyed = read_medbench_pool(pool_file)
    assert [r.item_id for r in result.rows] == [r.item_id for r in unkeyed.rows]


def test_a_swapped_or_blank_gold_line_is_reported_and_the_rest_import(tmp_path: Path) -> None:
    pool_file = _pool() / "llm" / "MedExam.jsonl"
    gold = _gold_from(pool_file, tmp_path / "unused.jsonl")
    ids = [g["other"]["id"] for g in gold]
    a = 2  # line 3
    b = next(i for i in range(len(gold)) if ids[i] != ids[a])
    gold[a], gold[b] = gold[b], gold[a]
    gold[9]["answer"] = "  "  # line 10
    _write_jsonl(tmp_path / "gold.jsonl", gold)

    result = read_medbench_pool(pool_file, tmp_path / "gold.jsonl")

    by_line = _errors_by_line(result)
    assert sorted(by_line) == sorted({a + 1, b + 1, 10})
    swapped = by_line[a + 1][0]
    assert swapped.file == str(tmp_path / "gold.jsonl")
    assert swapped.field == "other.id"
    assert swapped.reason == (
        f"gold line {a + 1} is for MedExam_V4 id {ids[b]}, the pool line is id {ids[a]}"
    )
    assert by_line[10] == [
        LineError(str(tmp_path / "gold.jsonl"), 10, "answer", "gold answer is empty")
    ]
    assert len(result.rows) == 147
    assert {r.line for r in result.rows}.isdisjoint({a + 1, b + 1, 10})
    assert all(r.reference for r in result.rows)


def test_gold_lines_of_two_permutations_swapped_are_caught_by_question_text(
    tmp_path: Path,
) -> None:
    pool = [_line(7, f"stem, options in order {k}") for k in range(3)]
    _write_jsonl(tmp_path / "pool.jsonl", pool)
    gold = [dict(o, answer=a) for o, a in zip(pool, ["<A>", "<B>", "<C>"], strict=True)]
    gold[0], gold[1] = gold[1], gold[0]
    _write_jsonl(tmp_path / "gold.jsonl", gold)

    result = read_medbench_pool(tmp_path / "pool.jsonl", tmp_path / "gold.jsonl")

    assert [(e.line, e.field) for e in result.errors] == [(1, "question"), (2, "question")]
    assert "another option order" in result.errors[0].reason
    assert [(r.item_id, r.reference) for r in result.rows] == [("Demo-7-p3", ("<C>",))]


def test_a_short_or_long_gold_file_is_reported_per_line(tmp_path: Path) -> None:
    pool = [_line(i) for i in range(3)]
    _write_jsonl(tmp_path / "pool.jsonl", pool)
    _write_jsonl(tmp_path / "short.jsonl", [dict(o, answer="x") for o in pool[:2]])
    _write_jsonl(
        tmp_path / "long.jsonl", [dict(o, answer="x") for o in [*pool, _line(3), _line(4)]]
    )

    short = read_medbench_pool(tmp_path / "pool.jsonl", tmp_path / "short.jsonl")
    long = read_medbench_pool(tmp_path / "pool.jsonl", tmp_path / "long.jsonl")

    assert [r.item_id for r in short.rows] == ["Demo-0", "Demo-1"]
    assert [e.reason for e in short.errors] == [
        "gold line 3 is missing (the pool line is Demo_V4 id 2)"
    ]
    assert len(long.rows) == 3
    assert [e.reason for e in long.errors] == [
        "gold line 4 has no pool line",
        "gold line 5 has no pool line",
    ]


def test_bad_gold_lines_do_not_stop_the_others(tmp_path: Path) -> None:
    pool = [_line(i) for i in range(4)]
    _write_jsonl(tmp_path / "pool.jsonl", pool)
    gold = [dict(o, answer="A") for o in pool]
    gold[1]["other"] = {"id": 1, "source": "Other_V4"}
    gold[2]["answer"] = ["A"]
    del gold[3]["answer"]
    _write_jsonl(tmp_path / "gold.jsonl", gold)
    lines = (tmp_path / "gold.jsonl").read_text("utf-8").splitlines()
    lines[0] = lines[0][:-3]
    (tmp_path / "gold.jsonl").write_text("\n".join(lines) + "\n", "utf-8")

    result = read_medbench_pool(tmp_path / "pool.jsonl", tmp_path / "gold.jsonl")

    assert result.rows == ()
    assert [(e.line, e.field) for e in result.errors] == [
        (1, ""),
        (2, "other.source"),
        (3, "answer"),
        (4, "answer"),
    ]
    assert result.errors[0].reason.startswith("not JSON: ")
    assert result.errors[1].reason == (
        "gold line 2 is for Other_V4 id 1, the pool line is Demo_V4 id 1"
    )
    assert result.errors[2].reason == "gold answer is a list, not a string"
    assert result.errors[3].reason == "gold answer is missing"


def test_an_unreadable_file_is_one_error_at_line_zero(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "pool.jsonl", [_line(1)])
    missing = read_medbench_pool(tmp_path / "nope.jsonl")
    no_gold = read_medbench_pool(tmp_path / "pool.jsonl", tmp_path / "nope.jsonl")
    for result in (missing, no_gold):
        assert result.rows == ()
        [error] = result.errors
        assert error.line == 0 and error.file == str(tmp_path / "nope.jsonl")
        assert error.reason.startswith("cannot read the file: ")


# Malformed pool lines


def test_each_malformed_pool_line_gives_one_error_and_good_lines_still_import(
    tmp_path: Path,
) -> None:
    lines = [
        json.dumps(_line(1, "first")),
        '{"question": "q", "other": {"id": 2 "source": "Demo_V4"}}',
        json.dumps({"question": "q", "other": {"source": "Demo_V4"}}),
        json.dumps(_line("abc")),
        json.dumps(_line(5, "  ")),
        json.dumps(_line(6, img_path=7)),
        "",
        json.dumps(_line("8", "digit-string id", img_path=["a.png", "b.png"])),
        json.dumps(_line(9, source="")),
        json.dumps(["not", "an", "object"]),
        json.dumps(_line(11, "last", img_path="one.pdf")),
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")

    result = read_medbench_pool(path)

    assert [(r.line, r.item_id, r.question, r.image_paths) for r in result.rows] == [
        (1, "Demo-1", "first", ()),
        (8, "Demo-8", "digit-string id", ("a.png", "b.png")),
        (11, "Demo-11", "last", ("one.pdf",)),
    ]
    assert [(e.line, e.field, e.reason) for e in result.errors] == [
        (2, "", "not JSON: Expecting ',' delimiter at column 37"),
        (3, "other.id", "other.id is missing"),
        (4, "other.id", 'other.id is not a non-negative int (got "abc")'),
        (5, "question", "question is empty"),
        (6, "img_path", "img_path is a number (7), not a list of paths or one path"),
        (9, "other.source", "other.source is empty"),
        (10, "", "the line is a list, not a JSON object"),
    ]
    assert all(e.file == str(path) for e in result.errors)


def test_more_pool_line_problems_name_their_field(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "pool.jsonl",
        [
            {"answer": "", "other": {"id": 1, "source": "Demo"}},
            {"question": 3, "other": {"id": 2, "source": "Demo"}},
            {"question": "q"},
            {"question": "q", "other": "Demo-4"},
            _line(True),
            _line(-6),
            _line(7.5),
            _line(8, img_path=["a.png", 3]),
            _line(9, img_path=""),
        ],
    )
    result = read_medbench_pool(path)
    assert result.rows == ()
    assert [(e.field, e.reason) for e in result.errors] == [
        ("question", "question is missing"),
        ("question", "question is a number (3)"),
        ("other", "other is missing"),
        ("other", "other is a string, not an object"),
        ("other.id", "other.id is not a non-negative int (got true)"),
        ("other.id", "other.id is not a non-negative int (got -6)"),
        ("other.id", "other.id is not a non-negative int (got 7.5)"),
        ("img_path", "img_path[1] is a number (3), not a path"),
        ("img_path", "img_path is an empty string"),
    ]


def test_non_utf8_and_bom_lines(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    first = json.dumps(_line(1, "眼科"), ensure_ascii=False).encode()
    third = json.dumps(_line(3, "儿科"), ensure_ascii=False).encode()
    path.write_bytes(b"\xef\xbb\xbf" + first + b"\n" + b'{"question": "\xff"}\n' + third + b"\n")
    result = read_medbench_pool(path)
    assert [(r.line, r.item_id, r.question) for r in result.rows] == [
        (1, "Demo-1", "眼科"),
        (3, "Demo-3", "儿科"),
    ]
    assert [(e.line, e.field, e.reason) for e in result.errors] == [(2, "", "not UTF-8")]


def test_permutation_numbers_count_bad_lines_so_ids_stay_stable(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "pool.jsonl",
        [_line(4, "a"), _line(5, "single"), _line(4, ""), _line(4, "c"), _line(3, "x", "X")],
    )
    result = read_medbench_pool(path)
    assert [(r.item_id, r.group_id) for r in result.rows] == [
        ("Demo-4-p1", "Demo-4"),
        ("Demo-5", "Demo-5"),
        ("Demo-4-p3", "Demo-4"),
        ("X-3", "X-3"),
    ]
    assert [(e.line, e.field) for e in result.errors] == [(3, "question")]


def test_sources_that_collide_after_dropping_the_version_are_reported(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "pool.jsonl", [_line(1, source="A_V4"), _line(1, source="A_v4")])
    result = read_medbench_pool(path)
    assert [r.item_id for r in result.rows] == ["A-1"]
    assert [(e.line, e.field, e.reason) for e in result.errors] == [
        (2, "item_id", "item id A-1 is already used by line 1")
    ]


# Mapped JSONL


def test_jsonl_mapping_with_nested_keys_constants_and_lists(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "bank.jsonl",
        [
            {
                "meta": {"id": 17, "group": "g1"},
                "prompt": "问题一",
                "gold": "A, C",
                "images": ["x/1.png", "x/2.png"],
                "tags": ["cardiology", "oncology"],
                "turns": [
                    {"role": "system", "content": "你是医生"},
                    {"role": "user", "content": "问题一"},
                ],
            },
            {"meta": {"id": "b-2"}, "prompt": "问题二", "images": "y.png", "tags": "a;b"},
            {"meta": {}, "prompt": "no id"},
            {"meta": {"id": 4}, "prompt": ""},
            {"meta": {"id": 5}, "prompt": "bad list", "tags": ["ok", 3]},
            {"meta": {"id": 6}, "prompt": "bad turn", "turns": [{"role": "bot", "content": ""}]},
        ],
    )
    mapping = FieldMapping.from_spec(
        "item_id=meta.id,question=prompt,reference=gold,reference_separator=,,"
        "group_id=meta.group,image_paths=images,specialties=tags,messages=turns,"
        "dataset=:DDx-advanced,answer_format=:choice_multi"
    )

    result = read_jsonl_mapped(tmp_path / "bank.jsonl", mapping, provenance="p", licence="l")

    assert result.rows == (
        ImportRow(
            file=str(path),
            line=1,
            item_id="17",
            source="",
            dataset="DDx-advanced",
            group_id="g1",
            question="问题一",
            answer_format="choice_multi",
            reference=("A", "C"),
            image_paths=("x/1.png", "x/2.png"),
            messages=(("system", "你是医生"), ("user", "问题一")),
            specialties=("cardiology", "oncology"),
            provenance="p",
            licence="l",
        ),
        ImportRow(
            file=str(path),
            line=2,
            item_id="b-2",
            source="",
            dataset="DDx-advanced",
            group_id="b-2",
            question="问题二",
            answer_format="choice_multi",
            reference=(),
            image_paths=("y.png",),
            specialties=("a", "b"),
            provenance="p",
            licence="l",
        ),
    )
    assert [(e.line, e.field, e.reason) for e in result.errors] == [
        (3, "meta.id", "meta.id (item_id) is missing"),
        (4, "prompt", "prompt (question) is empty"),
        (5, "tags", "tags (specialties) item 1 is a number (3), not a string"),
        (6, "turns", 'turns (messages) item 0 has role "bot", not one of system, user, assistant'),
    ]


def test_jsonl_mapping_reads_a_medbench_pool_line_by_source_tag(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "bank.jsonl",
        [
            {"question": "q", "answer": {"诊断": "未知"}, "other": {"id": 1, "source": "SMDoc_V4"}},
            {"question": "q", "answer": 3, "other": {"id": 2}},
        ],
    )
    mapping = FieldMapping.from_spec(
        "item_id=other.id,question=question,source=other.source,reference=answer"
    )
    result = read_jsonl_mapped(path, mapping)
    [row] = result.rows
    assert (row.source, row.dataset, row.reference) == ("SMDoc_V4", "", ('{"诊断": "未知"}',))
    assert [(e.line, e.reason) for e in result.errors] == [(2, "other.source (source) is missing")]


def test_jsonl_mapping_reports_duplicate_ids_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    path.write_text('{"id": "a", "q": "x"}\n{"id": "a", "q": "y"}\n{"id": \n', "utf-8")
    result = read_jsonl_mapped(
        path, FieldMapping(item_id="id", question="q", dataset=None, constant_dataset="MedHC")
    )
    assert [r.question for r in result.rows] == ["x"]
    assert [(e.line, e.field) for e in result.errors] == [(2, "item_id"), (3, "")]


# Mapped CSV


def test_csv_mapping_with_bom_constants_and_multi_valued_cells(tmp_path: Path) -> None:
    path = tmp_path / "bank.csv"
    path.write_bytes(
        "\ufeffid,prompt,answer,dataset,images,specialties,turns\r\n"
        '1,"第一题\r\n两行",A|C,MedHG,a.png;b.png,内科; 外科,\r\n'
        '2,第二题,,MedHG,"[""c.png""]",,"[{""role"": ""user"", ""content"": ""hi""}]"\r\n'
        "\r\n"
        "3,,B,MedHG,,,\r\n"
        ",第四题,B,MedHG,,,\r\n"
        '5,第五题,B,,"[oops",,\r\n'
        "6,第六题,B\r\n"
        '7,第七题,B,MedHG,,,"[{""role"": ""user""}]"\r\n'
        "8,第八题,D,MedHG,,,\r\n".encode()
    )
    mapping = FieldMapping.from_spec(
        "item_id=id, question=prompt, reference=answer, reference_separator=|, dataset=dataset,"
        " image_paths=images, specialties=specialties, messages=turns, answer_format=:choice"
    )

    result = read_csv_mapped(path, mapping)

    assert [
        (r.line, r.item_id, r.question, r.reference, r.image_paths, r.specialties, r.messages)
        for r in result.rows
    ] == [
        (2, "1", "第一题\r\n两行", ("A", "C"), ("a.png", "b.png"), ("内科", "外科"), ()),
        (4, "2", "第二题", (), ("c.png",), (), (("user", "hi"),)),
        (11, "8", "第八题", ("D",), (), (), ()),
    ]
    assert all(r.dataset == "MedHG" and r.answer_format == "choice" for r in result.rows)
    assert [(e.line, e.field, e.reason) for e in result.errors] == [
        (6, "prompt", "prompt (question) is empty"),
        (7, "id", "id (item_id) is empty"),
        (8, "dataset", "dataset is empty"),
        (8, "images", "images (image_paths) is not a JSON array: Expecting value at column 2"),
        (9, "", "the row has 3 cells, the header has 7"),
        (10, "turns", "turns (messages) item 0 has content null, not a string"),
    ]


def test_csv_missing_mapped_columns_are_header_errors(tmp_path: Path) -> None:
    path = tmp_path / "bank.csv"
    path.write_text("id,question\n1,q\n", encoding="utf-8")
    mapping = FieldMapping.from_spec("item_id=id,question=prompt,reference=gold,dataset=:MedHC")
    result = read_csv_mapped(path, mapping)
    assert result.rows == ()
    assert [(e.line, e.field, e.reason) for e in result.errors] == [
        (1, "prompt", "column prompt (question) is not in the header"),
        (1, "gold", "column gold (reference) is not in the header"),
    ]
    twice = tmp_path / "twice.csv"
    twice.write_text(" id ,q,id\n1,x,2\n", encoding="utf-8")
    result = read_csv_mapped(twice, FieldMapping.from_spec("item_id=id,question=q,dataset=:X"))
    assert result.rows == ()
    assert [e.reason for e in result.errors] == ["column id (item_id) is in the header twice"]


def test_csv_without_a_header_or_with_bad_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"\xef\xbb\xbf\r\n")
    mapping = FieldMapping.from_spec("item_id=id,question=q,dataset=:MedHC")
    assert [e.reason for e in read_csv_mapped(empty, mapping).errors] == [
        "no header row (the file is empty)"
    ]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,q\n1,\xff\xfe\n2,ok\n")
    result = read_csv_mapped(bad, mapping)
    assert [(r.item_id, r.question) for r in result.rows] == [("2", "ok")]
    assert [(e.line, e.reason) for e in result.errors] == [(2, "not UTF-8")]


# Mapping specs


def test_from_spec_parses_columns_constants_and_separators() -> None:
    mapping = FieldMapping.from_spec(
        "item_id=other.id, question=question, dataset=:MedExam, reference=answer,"
        "reference_separator=, ,answer_format=fmt"
    )
    assert mapping == FieldMapping(
        item_id="other.id",
        question="question",
        constant_dataset="MedExam",
        reference="answer",
        reference_separator=", ",
        answer_format="fmt",
    )
    assert mapping.columns() == [
        ("item_id", "other.id"),
        ("question", "question"),
        ("reference", "answer"),
        ("answer_format", "fmt"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("item_id=id,question=q", "needs a dataset"),
        ("item_id=id,dataset=:X", "the spec needs question=<column>"),
        ("item_id=id,question=q,dataset=:X,colour=red", "unknown field 'colour'"),
        ("item_id=id,question=q,dataset=:X,reference=:A", "reference cannot be a constant"),
        ("item_id=id,question=q,dataset=:X,dataset=d", "dataset is given twice"),
        ("item_id=id,question=q,dataset=:", "the constant for dataset is empty"),
        ("item_id=id,question=q,dataset=:X,group_id=", "group_id has no value"),
        ("item_id=id,question=q,dataset=:X,reference_separator=;", "needs a reference column"),
        ("item_id=id question=q,dataset=:X", "every ',' must start a name=column entry"),
        ("item_id=id,question=q,dataset=:X,reference", "every ',' must start a name=column"),
        ("item_id", "is not name=column"),
    ],
)
def test_from_spec_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FieldMapping.from_spec(spec)


# Summary and dependencies


def test_summarise_groups_errors_by_reason_with_locations() -> None:
    errors = tuple(
        LineError("a.jsonl", n, "other.id", "other.id is missing") for n in (3, 7, 9, 12)
    )
    errors += (
        LineError("a.jsonl", 2, "", "not JSON: Expecting ',' delimiter at column 57"),
        LineError("b.jsonl", 5, "", "not JSON: Expecting value at column 1"),
        LineError("g.jsonl", 4, "other.id", "gold line 4 is for X id 2, the pool line is id 1"),
    )
    row = ImportRow("a.jsonl", 1, "X-1", "X", "", "X-1", "q", "", ())
    text = summarise(ReadResult((row,), errors))
    assert text.splitlines() == [
        "1 rows (1 questions) read from 3 files, 7 errors",
        "  4 x other.id is missing: a.jsonl:3, a.jsonl:7, a.jsonl:9 and 1 more",
        "  2 x not JSON: a.jsonl:2, b.jsonl:5",
        "  1 x gold line 4 is for X id 2, the pool line is id 1: g.jsonl:4",
    ]


def test_the_importers_module_uses_the_standard_library_only() -> None:
    tree = ast.parse(Path(importers.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported
