"""The website's renderer on a built snapshot: structure, size, self-containment, both languages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from medbench_site.publish import LINK, write_site
from medbench_site.render import board_page, render_site, submission_page
from medbench_site.snapshot import (
    Board,
    DatasetScore,
    DimensionInfo,
    Entry,
    Report,
    Score,
    Snapshot,
)

DIMENSIONS = {
    "knowledge_qa": DimensionInfo("knowledge_qa", "llm", "Medical Knowledge QA", "医学知识问答"),
    "complex_reasoning": DimensionInfo(
        "complex_reasoning", "llm", "Complex Medical Reasoning", "复杂医学推理"
    ),
    "safety_ethics": DimensionInfo(
        "safety_ethics", "llm", "Healthcare Safety & Ethics", "医疗安全和伦理"
    ),
}
WHEN = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def entry(sid: str, overall: float, rank: int, group: int, cycle: str = "2026-q4") -> Entry:
    return Entry(
        submission_id=sid,
        tenant_id="hospital-" + sid,
        model_name=f"模型<{sid}>",
        model_version="v1",
        organisation="Org & Co",
        open_source=rank % 2 == 1,
        parameter_count="72B",
        release_date="2026-10-01",
        cycle=cycle,
        pool_id="pool-" + cycle,
        rank=rank,
        group=group,
        overall=Score(overall, overall - 3.04, overall + 2.96),
        dimensions={
            c: Score(overall + i, overall + i - 5, overall + i + 5)
            for i, c in enumerate(DIMENSIONS)
        },
        published_at=WHEN,
        equated=overall + 0.5 if sid == "sub_a" else None,
    )


def report(e: Entry) -> Report:
    return Report(
        submission_id=e.submission_id,
        overall=e.overall,
        dimensions=e.dimensions,
        datasets=(
            DatasetScore("MedExam", "knowledge_qa", Score(80.04, 75.0, 85.0), 300, 300, "mean"),
            DatasetScore("MedSafety", "safety_ethics", Score(60.0, 50.0, 70.0), 50, 50, "mean"),
        ),
        scored_items=350,
        created_at=WHEN,
        lineage={"pool_id": e.pool_id, "judge_models": ("judge-a", "judge-b"), "decoding": ""},
        equated=e.equated,
    )


def snapshot() -> Snapshot:
    q4 = (entry("sub_a", 81.26, 1, 1), entry("sub_b", 79.0, 1, 1), entry("sub_c", 40.0, 3, 2))
    q3 = (entry("sub_d", 70.0, 1, 1, "2026-q3"),)
    boards = [
        Board("llm", "api", (), {}),
        Board("llm", "upload", ("2026-q4", "2026-q3"), {"2026-q4": q4, "2026-q3": q3}),
    ]
    for track in ("multimodal", "agent"):
        boards += [Board(track, "api", (), {}), Board(track, "upload", (), {})]
    return Snapshot(
        generated_at=WHEN,
        boards=tuple(boards),
        reports={e.submission_id: report(e) for e in (*q4, *q3)},
        dimensions=DIMENSIONS,
        metrics={"MedExam": "accuracy", "MedSafety": "key_point_recall+judge"},
        registry_version="4.0+abc",
    )


class Page(HTMLParser):
    """Collects what the checks need: tags with attributes, text, ids."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(data: bytes) -> Page:
    page = Page()
    page.feed(data.decode())
    return page


FILES = render_site(snapshot())
PAGES = {p: d for p, d in FILES.items() if p.endswith(".html")}


def test_every_page_exists_in_both_languages_with_its_language_declared() -> None:
    zh = {p.removeprefix("zh/") for p in PAGES if p.startswith("zh/")}
    en = {p.removeprefix("en/") for p in PAGES if p.startswith("en/")}
    assert zh == en
    assert {
        "index.html",
        "methods.html",
        "llm-upload.html",
        "llm-upload-c-2026-q3.html",
        "llm-upload-history.html",
        submission_page("sub_d"),
    } <= zh
    for path, data in PAGES.items():
        if path == "index.html":
            continue
        html = next(a for t, a in parse(data).tags if t == "html")
        assert html["lang"] == ("zh-CN" if path.startswith("zh/") else "en"), path


def test_pages_are_small_and_load_nothing_from_elsewhere() -> None:
    for path, data in FILES.items():
        assert len(data) < 300_000, path
        if not path.endswith(".html"):
            continue
        for tag, attrs in parse(data).tags:
            for name in ("href", "src"):
                value = attrs.get(name) or ""
                assert not re.match(r"^([a-z]+:)?//", value), (path, tag, value)
            assert tag != "script", path


def test_the_board_shows_each_entry_with_its_numbers_interval_rank_and_group() -> None:
    page = PAGES["zh/" + board_page(snapshot().board("llm", "upload"))].decode()
    row = re.search(r'<tr class="g-odd" data-sid="sub_a">(.*?)</tr>', page).group(1)
    assert 'data-field="rank">1<' in row and 'data-field="group">1<' in row
    assert '<span class="v">81.3</span>' in row
    assert '<span class="lo">78.2</span>' in row and '<span class="hi">84.2</span>' in row
    assert 'data-field="equated">81.8<' in row
    assert "模型&lt;sub_a&gt; v1" in row  # escaped, never markup
    assert "Org &amp; Co" in row
    assert re.search(r'<tr class="g-even" data-sid="sub_c">.*data-field="rank">3<', page)
    # The latest cycle only; the older cycle has its own page.
    assert "sub_d" not in page
    assert "sub_d" in PAGES["zh/llm-upload-c-2026-q3.html"].decode()


def test_tables_charts_and_links_are_accessible() -> None:
    for path, data in PAGES.items():
        page = parse(data)
        tags = [t for t, _ in page.tags]
        if "table" in tags:
            assert tags.count("caption") == tags.count("table"), path
            assert all(a.get("scope") in ("col", "row") for t, a in page.tags if t == "th"), path
        for tag, attrs in page.tags:
            if tag == "svg":
                assert attrs.get("role") == "img" and attrs.get("aria-labelledby"), path
            if tag == "img":
                assert attrs.get("alt"), path
            if tag == "div" and attrs.get("class") == "scroll":
                assert attrs.get("tabindex") == "0" and attrs.get("aria-label"), path


def test_the_submission_page_has_radar_datasets_and_lineage() -> None:
    page = PAGES["en/" + submission_page("sub_a")].decode()
    assert page.count("<polygon") == 6  # five grid rings and the scores
    assert "Medical Knowledge QA 81.3" in page
    assert 'data-dataset="MedExam"' in page and "<code>accuracy</code>" in page
    assert "80.0" in page
    assert "<code>judge-a, judge-b</code>" in page and "<dd>none</dd>" in page
    assert "Rank 1 · Group 1" in page


def test_the_language_switch_points_at_the_same_page_in_the_other_language() -> None:
    for path, data in PAGES.items():
        if path == "index.html":
            continue
        lang, name = path.split("/", 1)
        other = "en" if lang == "zh" else "zh"
        switch = [a for t, a in parse(data).tags if t == "a" and a.get("data-switch")]
        assert [a["href"] for a in switch] == [f"../{other}/{name}"], path


def test_only_entries_on_a_board_get_pages() -> None:
    extra = snapshot()
    reports = dict(extra.reports)
    reports["sub_hidden"] = report(entry("sub_hidden", 99.0, 1, 1))
    files = render_site(Snapshot(extra.generated_at, extra.boards, reports, extra.dimensions))
    assert not any(b"sub_hidden" in data for data in files.values())


def test_a_build_replaces_the_previous_one_atomically(tmp_path: Path) -> None:
    first = write_site(tmp_path, {"index.html": b"one", "zh/a.html": b"a"})
    assert (first / "index.html").read_bytes() == b"one"
    write_site(tmp_path, {"index.html": b"two"})
    write_site(tmp_path, {"index.html": b"three"})
    assert (tmp_path / LINK / "index.html").read_bytes() == b"three"
    assert len(list((tmp_path / ".builds").iterdir())) == 2
    with pytest.raises(ValueError, match="leaves the build folder"):
        write_site(tmp_path, {"../escape.html": b"x"})


def test_a_pool_published_outside_any_cycle_is_named_so() -> None:
    base = snapshot()
    loose = (entry("sub_e", 50.0, 1, 1, cycle=""),)
    boards = tuple(
        Board("llm", "api", ("",), {"": loose}) if (b.track, b.board) == ("llm", "api") else b
        for b in base.boards
    )
    files = render_site(
        Snapshot(base.generated_at, boards, {"sub_e": report(loose[0])}, base.dimensions)
    )
    page = files["zh/llm-api.html"].decode()
    assert "<strong>未分周期</strong>" in page and 'data-sid="sub_e"' in page
    assert "no cycle" in files["en/" + submission_page("sub_e")].decode()


def test_a_large_board_is_split_into_pages_under_the_size_limit() -> None:
    base = snapshot()
    many = tuple(entry(f"sub_{i:04d}", 90 - i * 0.03, i + 1, i + 1) for i in range(250))
    boards = tuple(
        Board("llm", "api", ("2026-q4",), {"2026-q4": many})
        if (b.track, b.board) == ("llm", "api")
        else b
        for b in base.boards
    )
    reports = {e.submission_id: report(e) for e in many}
    files = render_site(Snapshot(base.generated_at, boards, reports, base.dimensions))
    pages = ["zh/llm-api.html", "zh/llm-api-p2.html", "zh/llm-api-p3.html"]
    assert "zh/llm-api-p4.html" not in files
    shown = []
    for path in pages:
        assert len(files[path]) < 300_000, path
        shown += re.findall(r'<tr class="g-\w+" data-sid="(sub_\d+)"', files[path].decode())
    assert shown == [e.submission_id for e in many]
    assert "zh/llm-api-c-2026-q4-p3.html" in files and "zh/llm-api-history-p3.html" in files
    # A submission links to the page of the board that shows it.
    assert 'href="llm-api-c-2026-q4-p3.html"' in files["zh/" + submission_page("sub_0249")].decode()
