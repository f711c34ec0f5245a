"""The website marks partial entries: after the ranked ones, no rank, a badge naming how much of
the track they cover, never "top" of a board, and their report page lists what they miss."""

from __future__ import annotations

import re
from dataclasses import replace

from medbench_site.render import board_page, render_site, submission_page
from medbench_site.snapshot import Board, Snapshot

from tests.libs.site.test_render import DIMENSIONS, entry, report, snapshot

MISSING = ("language_generation", "language_understanding")


def partial_snapshot() -> Snapshot:
    """The llm/upload board of 2026-q4 with a partial entry, highest overall of all, after the
    ranked ones (as the aggregator lists it), and one that misses a dataset only."""
    base = snapshot()
    partial = replace(
        entry("sub_p", 95.0, 0, 0),
        partial=True,
        missing_dimensions=MISSING,
        missing_datasets=("MedSummary", "SMDoc"),
    )
    datasets_only = replace(
        entry("sub_q", 30.0, 0, 0), partial=True, missing_datasets=("MedHC", "MedMC")
    )
    board = base.board("llm", "upload")
    q4 = (*board.entries["2026-q4"], partial, datasets_only)
    boards = tuple(
        Board("llm", "upload", board.cycles, {**board.entries, "2026-q4": q4})
        if (b.track, b.board) == ("llm", "upload")
        else b
        for b in base.boards
    )
    reports = dict(base.reports)
    for e in (partial, datasets_only):
        reports[e.submission_id] = replace(
            report(e),
            partial=True,
            missing_dimensions=e.missing_dimensions,
            missing_datasets=e.missing_datasets,
        )
    return Snapshot(
        base.generated_at, boards, reports, base.dimensions, base.metrics, base.registry_version
    )


FILES = render_site(partial_snapshot())
UPLOAD = board_page(Board("llm", "upload", (), {}))


def rows(page: str) -> list[tuple[str, str, str]]:
    """(row class, submission, rank cell) of every board row, in order."""
    return re.findall(
        r'<tr class="([\w-]+)" data-sid="(\w+)"><td class="num" data-field="rank">([^<]*)<', page
    )


def test_a_partial_entry_is_listed_after_the_ranked_ones_with_no_rank_and_its_badge() -> None:
    zh, en = (FILES[f"{lang}/{UPLOAD}"].decode() for lang in ("zh", "en"))
    assert [(sid, rank) for _, sid, rank in rows(en)] == [
        ("sub_a", "1"), ("sub_b", "1"), ("sub_c", "3"), ("sub_p", "-"), ("sub_q", "-"),
    ]  # fmt: skip
    assert [kind for kind, sid, _ in rows(en) if sid in ("sub_p", "sub_q")] == ["partial"] * 2
    row = re.search(r'<tr class="partial" data-sid="sub_p">(.*?)</tr>', en).group(1)
    assert 'data-field="group">-<' in row
    # Three dimensions shown, two missing: 3 of 5.
    assert '<span class="badge" data-field="partial">partial: 3 of 5 dimensions</span>' in row
    only_datasets = re.search(r'data-sid="sub_q">(.*?)</tr>', en).group(1)
    assert "partial: 2 datasets missing" in only_datasets
    assert "不完整：覆盖 3/5 个维度" in zh and "不完整：缺少 2 个数据集" in zh
    assert "listed after every complete entry, without a rank" in en
    # A board without partial entries has no such note.
    assert "without a rank" not in FILES["en/llm-upload-c-2026-q3.html"].decode()


def test_the_top_of_a_board_is_its_first_ranked_entry_never_a_partial_one() -> None:
    home = FILES["en/index.html"].decode()
    assert f'Top: <a href="{submission_page("sub_a")}">' in home
    # A board with partial entries only shows no top entry at all.
    base = partial_snapshot()
    board = base.board("llm", "upload")
    only = {"2026-q4": tuple(e for e in board.entries["2026-q4"] if e.partial)}
    boards = tuple(
        Board("llm", "upload", ("2026-q4",), only) if b is board else b for b in base.boards
    )
    files = render_site(Snapshot(base.generated_at, boards, base.reports, base.dimensions))
    assert "Top:" not in files["en/index.html"].decode()


def test_the_report_page_of_a_partial_entry_says_so_and_lists_what_it_misses() -> None:
    en = FILES["en/" + submission_page("sub_p")].decode()
    zh = FILES["zh/" + submission_page("sub_p")].decode()
    assert "not ranked (partial)" in en and "Rank 0" not in en
    block = re.search(r'<div class="partial" data-field="partial">(.*?)</div>', en).group(1)
    assert "partial: 3 of 5 dimensions" in block
    assert "its overall is the mean of the 3 dimensions it has" in block
    names = [DIMENSIONS.get(code) for code in MISSING]
    assert names == [None, None]  # not in this snapshot's names: shown by code
    assert "<dd>language_generation, language_understanding</dd>" in block
    assert "<dd>MedSummary, SMDoc</dd>" in block
    assert "本报告不完整" in zh and "缺少的数据集" in zh
    # A complete entry's page has none of it.
    complete = FILES["en/" + submission_page("sub_a")].decode()
    assert 'class="partial"' not in complete and "Rank 1 · Group 1" in complete


def test_history_marks_a_partial_result() -> None:
    history = FILES["en/llm-upload-history.html"].decode()
    cell = re.search(r'data-cycle="2026-q4"><a href="s-sub_p.html">95.0</a>(.*?)</td>', history)
    assert cell is not None and "partial" in cell.group(1)
