"""Answer files checked against a download before anything is sent: every line of every layout
(the project's JSONL and CSV, the platform's own files) accepted or named by file:line, with the
real MedBench v4 test-pool files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medbench_client import platform_files
from medbench_client.answer_files import (
    MAX_ANSWER_BYTES,
    AnswerFileError,
    Served,
    ServedItem,
    check_answer_files,
    problems_path,
    served_from_prompts,
    shape_problem,
    write_problems,
)
from medbench_client.importers import read_medbench_pool
from medbench_messaging import sizing
from tests.shared_data import shared_path


def served(*items: tuple[str, str, str]) -> Served:
    return Served({i: ServedItem(i, d, f, f"问题 {i}") for i, d, f in items}, "test download")


SERVED = served(
    ("MedExam-1-p1", "MedExam", "choice_single"),
    ("MedExam-1-p2", "MedExam", "choice_single"),
    ("MedTreat-7", "MedTreat", "free_text"),
    ("MedDetect-188", "MedDetect", "boxes"),
    ("IR-CMeEE-4", "MedOCR", "json_object"),
)


def write(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join(
            (x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines
        ),
        encoding="utf-8",
    )
    return path


def test_the_client_limit_is_the_gateways() -> None:
    assert MAX_ANSWER_BYTES == sizing.MAX_ANSWER_BYTES


def test_every_bad_line_is_named_with_its_file_line_field_and_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path / "answers.jsonl",
        [
            {"item_id": "MedExam-1-p1", "answer": "<A>"},
            "",
            "{not json",
            {"answer": "<B>"},
            {"item_id": "MedTreat-7", "answer": 3},
            ["MedTreat-7", "x"],
            {"item_id": "MedTreat-7"},
            {"item_id": "MedExam-1-p1", "answer": "<C>"},
            {"item_id": "MedExam-9", "answer": "<C>"},
            {"item_id": "MedTreat-7", "answer": "  "},
            {"item_id": "MedTreat-7", "answer": "答" * (MAX_ANSWER_BYTES // 3 + 1)},
            {"item_id": "MedExam-1-p2", "answer": "答" * (MAX_ANSWER_BYTES // 3)},
        ],
    )
    checked = check_answer_files([path], SERVED)
    assert [str(p) for p in checked.problems] == [
        f"{path}:3: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:4: item_id: item_id is missing or not a non-empty string",
        f"{path}:5: answer: the answer is int, not text",
        f'{path}:6: expected a JSON object ({{"item_id", "answer"}} or the platform\'s format)',
        f"{path}:7: answer: item 'MedTreat-7' has no answer",
        f"{path}:8: item_id: item 'MedExam-1-p1' is answered twice (first at {path}:1)",
        f"{path}:9: item_id: item 'MedExam-9' is not served in this submission",
        f"{path}:10: answer: the answer is empty (fill it in, or leave the line out)",
        f"{path}:11: answer: the answer is {3 * (MAX_ANSWER_BYTES // 3 + 1)} bytes; at most "
        f"{MAX_ANSWER_BYTES}",
        f"{path}:12: warning: answer: no option letter found for a choice_single item (e.g. <B>)",
    ]
    # The answer exactly at the limit is valid (a warning is sent as it is).
    assert [(a.line, a.item_id) for a in checked.answers] == [
        (1, "MedExam-1-p1"),
        (12, "MedExam-1-p2"),
    ]
    assert checked.lines == 11
    assert checked.summary(SERVED) == [
        "checked 11 lines in 1 file against test download (5 items)",
        "2 valid, 9 invalid: 1 not valid JSON, 1 not a JSON object, 1 no item id, 1 not served "
        "in this submission, 1 answered twice, 2 empty answer, 1 answer not text, 1 answer over "
        f"{MAX_ANSWER_BYTES} bytes",
        "1 warnings: answer shape unlike the dataset's format (sent as is)",
    ]


def test_nothing_stops_after_n_problems(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [{"item_id": f"x{i}", "answer": "<A>"} for i in range(3000)])
    checked = check_answer_files([path], SERVED)
    assert len(checked.errors) == 3000 and not checked.answers
    report = problems_path([path])
    write_problems(report, checked, ["header"])
    lines = report.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# header" and len(lines) == 3001
    assert lines[-1] == f"{path}:3000: item_id: item 'x2999' is not served in this submission"


def test_platform_lines_match_by_the_ids_the_download_carried(tmp_path: Path) -> None:
    path = write(
        tmp_path / "MedExam.jsonl",
        [
            {
                "question": "q",
                "answer": "<B>",
                "other": {"id": "MedExam-1-p1", "source": "MedExam"},
            },
            {"question": "q", "answer": "", "other": {"id": "MedExam-1-p2", "source": "MedExam"}},
            # A file of the platform itself: integer ids, matched when exactly one item has it.
            {"question": "q", "answer": "用药", "other": {"id": 7, "source": "MedTreat_V4"}},
            {"question": "q", "answer": "{}", "other": {"id": 4, "source": "IR-CMeEE"}},
            # Permutations share (source, id): the question text tells them apart, else named.
            {
                "question": "问题 MedExam-1-p2",
                "answer": "<C>",
                "other": {"id": 1, "source": "MedExam_V4"},
            },
            {
                "question": "another order",
                "answer": "<C>",
                "other": {"id": 1, "source": "MedExam_V4"},
            },
            {"question": "q", "answer": "x", "other": {"id": 99, "source": "MedExam_V4"}},
            {"question": "q", "answer": "x", "other": {"source": "MedExam_V4"}},
        ],
    )
    checked = check_answer_files([path], SERVED)
    assert [(a.line, a.item_id) for a in checked.answers] == [
        (1, "MedExam-1-p1"),
        (3, "MedTreat-7"),
        (4, "IR-CMeEE-4"),
        (5, "MedExam-1-p2"),
    ]
    assert [(p.line, p.field, p.kind) for p in checked.problems] == [
        (2, "answer", "blank"),
        (6, "other.id", "ambiguous"),
        (7, "other.id", "unserved"),
        (8, "other.id", "id"),
    ]
    assert "matches 2 served items" in checked.problems[1].reason
    assert not checked.problems[0].blocking  # blank lines are not answered, not an error


def test_csv_answers_keep_multi_line_cells_and_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text(
        'item_id,answer\nMedTreat-7,"第一行\n第二行"\n\nMedExam-1-p1,<A>\nMedExam-2,<B>\n',
        encoding="utf-8",
    )
    checked = check_answer_files([path], SERVED)
    assert [(a.line, a.item_id, a.answer) for a in checked.answers] == [
        (2, "MedTreat-7", "第一行\n第二行"),
        (5, "MedExam-1-p1", "<A>"),
    ]
    assert [(p.line, p.kind) for p in checked.problems] == [(6, "unserved")]
    (tmp_path / "bad.csv").write_text("id,text\na,b\n", encoding="utf-8")
    bad = check_answer_files([tmp_path / "bad.csv"], SERVED)
    assert [(p.line, p.kind) for p in bad.problems] == [(1, "object")]
    assert "no item_id or answer column" in bad.problems[0].reason


def test_folders_unreadable_files_and_missing_paths(tmp_path: Path) -> None:
    write(tmp_path / "b.jsonl", [{"item_id": "MedTreat-7", "answer": "x"}])
    write(tmp_path / "a.jsonl", [{"item_id": "MedTreat-7", "answer": "y"}])
    (tmp_path / ".hidden.jsonl").write_text("{broken")
    (tmp_path / "notes.txt").write_text("{broken")
    (tmp_path / "c.csv").write_bytes(b"item_id,answer\nMedExam-1-p1,\xe9\n")
    checked = check_answer_files([tmp_path], SERVED)
    assert checked.files == [str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "c.csv")]
    assert [str(p) for p in checked.problems] == [
        f"{tmp_path / 'b.jsonl'}:1: item_id: item 'MedTreat-7' is answered twice (first at "
        f"{tmp_path / 'a.jsonl'}:1)",
        f"{tmp_path / 'c.csv'}: not UTF-8 text (invalid continuation byte at byte 28)",
    ]
    with pytest.raises(AnswerFileError, match="no such file"):
        check_answer_files([tmp_path / "missing.jsonl"], SERVED)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnswerFileError, match="no answer files"):
        check_answer_files([tmp_path / "empty"], SERVED)


@pytest.mark.parametrize(
    ("answer_format", "answer", "warned"),
    [
        ("choice_single", "<D>", False),
        ("choice_single", "答案是 B", False),
        ("choice_single", "不知道", True),
        ("choice_multi", "<A, C>", False),
        ("boxes", '```json\n[{"label": "息肉", "box": [1, 2, 3, 4]}]\n```', False),
        ("boxes", "左下方有病变", True),
        ("json_object", '结果：{"影像描述": "x"}', False),
        ("json_fields", "{broken", True),
        ("free_text", "", False),
    ],
)
def test_answer_shapes_are_only_warned_about(answer_format: str, answer: str, warned: bool) -> None:
    assert (shape_problem(answer_format, answer) is not None) is warned


def test_the_real_test_pool_round_trips_in_the_platforms_format(tmp_path: Path) -> None:
    """Every file of the v4 test pool (all three tracks) as a download: written in the
    platform's layout, answered, read back: every line matched to its item, none lost."""
    pool = shared_path("medbench-data", "medbench-v4-testpool")
    files = sorted(pool.glob("*/*.jsonl"))
    assert len(files) == 62
    prompts = []
    for f in files:
        result = read_medbench_pool(f)
        assert not result.errors, result.errors[:3]
        prompts.extend(
            {
                "item_id": row.item_id,
                "dataset": row.source.removesuffix("_V4"),
                "question": row.question,
                "answer_format": "free_text",
                "image_paths": list(row.image_paths),
                "messages": [],
            }
            for row in result.rows
        )
    assert len(prompts) == 2340
    folder = tmp_path / "download"
    (folder / ".medbench").mkdir(parents=True)
    write(platform_files.prompts_path(folder), prompts)
    counts = platform_files.write_dataset_files(folder, prompts)
    assert sum(counts.values()) == 2340
    manifest = platform_files.served_from_file(folder)
    # Answer every line of every dataset file, as a partner would, and one file twice over.
    for name in counts:
        path = folder / name
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert all(r["answer"] == "" for r in rows)
        for r in rows:
            r["answer"] = f"答 {r['other']['id']}"
        write(path, rows)
    image_lines = [p for p in prompts if p["image_paths"]]
    detect = json.loads((folder / "MedDetect.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert detect["img_path"][0].startswith("images/MedDetect/") and image_lines
    checked = check_answer_files([folder], manifest)
    assert not checked.problems and len(checked.answers) == 2340
    assert {a.item_id for a in checked.answers} == {p["item_id"] for p in prompts}
    # A second download keeps the answers already filled in.
    platform_files.write_dataset_files(folder, prompts)
    again = check_answer_files([folder], manifest)
    assert [a.answer for a in again.answers] == [a.answer for a in checked.answers]
    # The platform's own files (integer ids) match too, by (source, id) and the question text.
    original = check_answer_files(
        [
            write(
                tmp_path / "orig.jsonl",
                [
                    json.loads(x) | {"answer": "<A>"}
                    for f in files
                    for x in f.read_text(encoding="utf-8").splitlines()
                ],
            )
        ],
        manifest,
    )
    assert not original.errors and len(original.answers) == 2340


def test_a_download_manifest_must_be_one(tmp_path: Path) -> None:
    assert (
        served_from_prompts(['{"item_id": "a", "dataset": "D"}', ""], "x").items["a"].dataset == "D"
    )
    with pytest.raises(AnswerFileError, match="not a download"):
        served_from_prompts(['{"answer": "a"}'], "x")
    with pytest.raises(AnswerFileError, match="no such download"):
        platform_files.served_from_file(tmp_path / "nothing.jsonl")
