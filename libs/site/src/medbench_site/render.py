"""Snapshot -> the website's files (pure: no I/O, the same snapshot gives the same bytes).

Layout (every page in both languages, Chinese first):
    index.html                          -> zh/index.html
    assets/site.css
    {lang}/index.html                   tracks and boards
    {lang}/{track}-{board}.html         latest cycle of a board
    {lang}/{track}-{board}-c-{cycle}.html
    {lang}/{track}-{board}-history.html every cycle of every model
    {lang}/s-{submission}.html          one published submission's report
    {lang}/methods.html
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from importlib import resources

from medbench_site.charts import radar
from medbench_site.snapshot import TRACKS, Board, Entry, Report, Score, Snapshot
from medbench_site.text import LANG_NAMES, LANGS, METHODS, TEXT

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# Rows per leaderboard or history page (100 rows with three dimensions: about 112 KB).
PAGE_ROWS = 100


def stylesheet() -> bytes:
    return resources.files("medbench_site").joinpath("style.css").read_bytes()


def slug(value: str) -> str:
    """A file-name-safe form of an id (cycles and submission ids are already safe)."""
    return _SAFE.sub("_", value) or "_"


def board_page(board: Board, cycle: str | None = None) -> str:
    return f"{board.slug}.html" if cycle is None else f"{board.slug}-c-{slug(cycle)}.html"


def history_page(board: Board) -> str:
    return f"{board.slug}-history.html"


def submission_page(submission_id: str) -> str:
    return f"s-{slug(submission_id)}.html"


def part_page(name: str, part: int) -> str:
    """Page ``part`` (from 1) of a paged table whose first page is ``name``."""
    return name if part == 1 else f"{name.removesuffix('.html')}-p{part}.html"


def page_count(rows: int) -> int:
    return max(1, -(-rows // PAGE_ROWS))


def _pager(lang: _Lang, name: str, part: int, count: int) -> str:
    if count == 1:
        return ""
    links = "".join(
        f'<li><a href="{part_page(name, i)}"'
        + (' aria-current="page"' if i == part else "")
        + f">{i}</a></li>"
        for i in range(1, count + 1)
    )
    return f'<nav aria-label="{lang.t("pages")}"><ul class="cycles">{links}</ul></nav>'


def _num(value: float) -> str:
    return f"{value:.1f}"


def _date(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _Lang:
    code: str
    snapshot: Snapshot

    def t(self, key: str) -> str:
        return TEXT[self.code][key]

    def dim(self, code: str) -> str:
        info = self.snapshot.dimensions.get(code)
        if info is None:
            return code
        return (info.name_zh if self.code == "zh" else info.name) or code

    def track(self, track: str) -> str:
        return self.t(f"track.{track}")

    def board(self, board: str) -> str:
        return self.t(f"board.{board}")

    def cycle(self, cycle: str) -> str:
        return cycle or self.t("no_cycle")


def _page(lang: _Lang, name: str, title: str, body: str, current: str = "") -> str:
    other = "en" if lang.code == "zh" else "zh"
    html_lang = "zh-CN" if lang.code == "zh" else "en"
    nav = [("index.html", lang.t("home"))] + [
        (board_page(Board(track, "api", (), {})), lang.track(track)) for track in TRACKS
    ]
    nav.append(("methods.html", lang.t("methods")))
    items = "".join(
        f'<li><a href="{href}"'
        + (' aria-current="page"' if href == (current or name) else "")
        + f">{escape(label)}</a></li>"
        for href, label in nav
    )
    generated = f"{lang.t('generated')}: {_date(lang.snapshot.generated_at)}"
    return (
        f'<!doctype html>\n<html lang="{html_lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} · MedBench</title>\n"
        '<link rel="stylesheet" href="../assets/site.css">\n'
        f'<link rel="alternate" hreflang="{other}" href="../{other}/{name}">\n'
        "</head>\n<body>\n"
        f'<a class="skip" href="#main">{escape(lang.t("skip"))}</a>\n'
        f'<header><nav aria-label="{escape(lang.t("site"))}">'
        f'<a class="brand" href="index.html">{escape(lang.t("site"))}</a>'
        f"<ul>{items}</ul>"
        f'<a class="lang" href="../{other}/{name}" hreflang="{other}" lang="{other}" '
        f'data-switch="{other}">{escape(LANG_NAMES[other])}</a>'
        "</nav></header>\n"
        f'<main id="main">\n{body}\n</main>\n'
        f"<footer><p>{escape(lang.t('footer'))}</p><p>{escape(generated)}</p></footer>\n"
        "</body>\n</html>\n"
    )


def _score_cell(score: Score, field: str, extra: str = "") -> str:
    return (
        f'<td class="num" data-field="{field}"{extra}><span class="v">{_num(score.value)}</span>'
        f'<span class="ci">[<span class="lo">{_num(score.low)}</span>, '
        f'<span class="hi">{_num(score.high)}</span>]</span></td>'
    )


def _table(lang: _Lang, caption: str, head: str, rows: Iterable[str]) -> str:
    return (
        f'<div class="scroll" role="region" tabindex="0" '
        f'aria-label="{escape(caption)} ({escape(lang.t("table.scroll"))})">'
        f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _partial_text(
    lang: _Lang, present: int, missing_dimensions: Sequence[str], missing_datasets: Sequence[str]
) -> str:
    """The mark of a partial entry or report: how many of its track's dimensions it covers,
    or, when it has them all, how many datasets it misses."""
    if missing_dimensions:
        total = present + len(missing_dimensions)
        return lang.t("partial.dimensions").format(have=present, all=total)
    return lang.t("partial.datasets").format(n=len(missing_datasets))


def _partial_badge(lang: _Lang, e: Entry) -> str:
    if not e.partial:
        return ""
    text = _partial_text(lang, len(e.dimensions), e.missing_dimensions, e.missing_datasets)
    return f' <span class="badge" data-field="partial">{escape(text)}</span>'


def _dimension_codes(lang: _Lang, track: str, entries: Iterable[Entry]) -> list[str]:
    """The track's dimensions in registry order, then any others the entries carry."""
    codes = [c for c, d in lang.snapshot.dimensions.items() if d.track == track]
    for e in entries:
        codes += [c for c in e.dimensions if c not in codes]
    return codes


def _leaderboard_table(lang: _Lang, board: Board, entries: Sequence[Entry]) -> str:
    codes = _dimension_codes(lang, board.track, entries)
    equated = any(e.equated is not None for e in entries)
    head = (
        f'<th scope="col" class="num">{lang.t("rank")}</th>'
        f'<th scope="col" class="num">{lang.t("group")}</th>'
        f'<th scope="col">{lang.t("model")}</th>'
        f'<th scope="col">{lang.t("organisation")}</th>'
        f'<th scope="col">{lang.t("source")}</th>'
        f'<th scope="col">{lang.t("params")}</th>'
        f'<th scope="col">{lang.t("released")}</th>'
        f'<th scope="col" class="num">{lang.t("overall")}<span class="ci">'
        f"{lang.t('interval')}</span></th>"
        + (f'<th scope="col" class="num">{lang.t("equated")}</th>' if equated else "")
        + "".join(f'<th scope="col" class="num">{escape(lang.dim(c))}</th>' for c in codes)
    )
    rows = []
    for e in entries:
        name = e.model_name + (f" {e.model_version}" if e.model_version else "")
        # A partial entry is never ranked: no rank, no group, and its mark beside its name.
        cells = [
            f'<td class="num" data-field="rank">{"-" if e.partial else e.rank}</td>',
            f'<td class="num" data-field="group">{"-" if e.partial else e.group}</td>',
            f'<th scope="row" data-field="model"><a href="{submission_page(e.submission_id)}">'
            f"{escape(name)}</a>{_partial_badge(lang, e)}</th>",
            f'<td data-field="organisation">{escape(e.organisation or e.tenant_id)}</td>',
            f'<td data-field="source">{lang.t("open") if e.open_source else lang.t("closed")}</td>',
            f'<td data-field="params">{escape(e.parameter_count) or "-"}</td>',
            f'<td data-field="released">{escape(e.release_date) or "-"}</td>',
            _score_cell(e.overall, "overall"),
        ]
        if equated:
            value = "-" if e.equated is None else _num(e.equated)
            cells.append(f'<td class="num" data-field="equated">{value}</td>')
        for c in codes:
            s = e.dimensions.get(c)
            cells.append(
                _score_cell(s, "dimension", f' data-dimension="{escape(c)}"')
                if s
                else f'<td class="num" data-field="dimension" data-dimension="{escape(c)}">-</td>'
            )
        kind = "partial" if e.partial else "g-odd" if e.group % 2 else "g-even"
        rows.append(
            f'<tr class="{kind}" data-sid="{escape(e.submission_id)}">{"".join(cells)}</tr>'
        )
    caption = f"{lang.track(board.track)} · {lang.board(board.board)}"
    return _table(lang, caption, head, rows)


def _cycle_nav(lang: _Lang, board: Board, current: str | None, name: str) -> str:
    links = []
    for i, cycle in enumerate(board.cycles):
        href = board_page(board, cycle)
        label = lang.cycle(cycle) + (f" ({lang.t('latest')})" if i == 0 else "")
        here = ' aria-current="page"' if cycle == current and name != history_page(board) else ""
        links.append(f'<li><a href="{href}"{here}>{escape(label)}</a></li>')
    here = ' aria-current="page"' if name == history_page(board) else ""
    links.append(f'<li><a href="{history_page(board)}"{here}>{lang.t("history")}</a></li>')
    return (
        f'<nav aria-label="{lang.t("cycles")}"><h2 class="note">{lang.t("cycles")}</h2>'
        f'<ul class="cycles">{"".join(links)}</ul></nav>'
    )


def _other_boards(lang: _Lang, board: Board) -> str:
    links = [
        f'<li><a href="{board_page(b)}"'
        + (' aria-current="page"' if b.board == board.board else "")
        + f">{escape(lang.board(b.board))}</a></li>"
        for b in lang.snapshot.boards
        if b.track == board.track
    ]
    return (
        f'<nav aria-label="{escape(lang.track(board.track))}"><ul class="cycles">'
        f'{"".join(links)}</ul></nav><p class="note">{lang.t("boards.note")}</p>'
    )


def _board_body(lang: _Lang, board: Board, cycle: str | None, name: str, part: int = 1) -> str:
    title = f"{lang.track(board.track)} · {lang.board(board.board)}"
    parts = [f"<h1>{escape(title)}</h1>", _other_boards(lang, board)]
    if cycle is None:
        parts.append(f'<p class="note">{lang.t("empty")}</p>')
        return "".join(parts)
    entries = board.entries[cycle]
    parts.append(
        f"<p>{lang.t('cycle')}: <strong>{escape(lang.cycle(cycle))}</strong> · {len(entries)} "
        f"{lang.t('entries')}</p>"
    )
    parts.append(_cycle_nav(lang, board, cycle, name))
    pager = _pager(lang, name, part, page_count(len(entries)))
    shown = entries[(part - 1) * PAGE_ROWS : part * PAGE_ROWS]
    parts += [pager, _leaderboard_table(lang, board, shown), pager]
    parts.append(f'<p class="note">{lang.t("groups.note")}</p>')
    if any(e.partial for e in entries):
        parts.append(f'<p class="note">{lang.t("partial.note")}</p>')
    return "".join(parts)


def _history(board: Board) -> list[tuple[tuple[str, str, str], dict[str, Entry]]]:
    """Each model's entry per cycle, models in the order of their newest cycle's ranking."""
    models: dict[tuple[str, str, str], dict[str, Entry]] = {}
    for cycle in board.cycles:
        for e in board.entries[cycle]:
            models.setdefault(e.model_key, {})[cycle] = e
    return list(models.items())


def _history_body(lang: _Lang, board: Board, part: int = 1) -> str:
    title = f"{lang.track(board.track)} · {lang.board(board.board)} · {lang.t('history.title')}"
    models = _history(board)
    pager = _pager(lang, history_page(board), part, page_count(len(models)))
    head = f'<th scope="col">{lang.t("model")}</th>' + "".join(
        f'<th scope="col" class="num">{escape(lang.cycle(c))}</th>' for c in board.cycles
    )
    rows = []
    for key, by_cycle in models[(part - 1) * PAGE_ROWS : part * PAGE_ROWS]:
        first = next(iter(by_cycle.values()))
        name = key[1] + (f" {key[2]}" if key[2] else "")
        cells = [
            f'<th scope="row">{escape(name)}<span class="ci">'
            f"{escape(first.organisation or first.tenant_id)}</span></th>"
        ]
        for cycle in board.cycles:
            e = by_cycle.get(cycle)
            if e is None:
                cells.append('<td class="num">-</td>')
                continue
            equated = "" if e.equated is None else f" · {lang.t('equated')} {_num(e.equated)}"
            equated += f" · {lang.t('partial')}" if e.partial else ""
            cells.append(
                f'<td class="num" data-cycle="{escape(cycle)}"><a href="'
                f'{submission_page(e.submission_id)}">{_num(e.overall.value)}</a>'
                f'<span class="ci">[{_num(e.overall.low)}, {_num(e.overall.high)}]'
                f"{escape(equated)}</span></td>"
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    parts = [
        f"<h1>{escape(title)}</h1>",
        _cycle_nav(lang, board, None, history_page(board)),
        f'<p class="note">{lang.t("history.note")}</p>',
    ]
    if rows:
        parts += [pager, _table(lang, title, head, rows), pager]
    else:
        parts.append(f'<p class="note">{lang.t("empty")}</p>')
    return "".join(parts)


def _meta(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<dl class="meta">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items)
        + "</dl>"
    )


def _lineage(lang: _Lang, value: str | tuple[str, ...]) -> str:
    text = ", ".join(value) if isinstance(value, tuple) else value
    return f"<code>{escape(text)}</code>" if text else lang.t("none")


def _submission_body(lang: _Lang, board: Board, entry: Entry, report: Report) -> str:
    name = entry.model_name + (f" {entry.model_version}" if entry.model_version else "")
    codes = [c for c in _dimension_codes(lang, board.track, [entry]) if c in report.dimensions]
    part = board.entries[entry.cycle].index(entry) // PAGE_ROWS + 1
    board_link = f'<a href="{part_page(board_page(board, entry.cycle), part)}">'
    board_link += f"{escape(lang.track(board.track))} · "
    board_link += f"{escape(lang.board(board.board))} · {escape(lang.cycle(entry.cycle))}</a>"
    meta = _meta(
        [
            (lang.t("organisation"), escape(entry.organisation or entry.tenant_id)),
            (lang.t("source"), lang.t("open") if entry.open_source else lang.t("closed")),
            (lang.t("params"), escape(entry.parameter_count) or "-"),
            (lang.t("released"), escape(entry.release_date) or "-"),
            (lang.t("board_of"), board_link),
            (
                lang.t("on_board"),
                lang.t("unranked")
                if entry.partial
                else f"{lang.t('rank')} {entry.rank} · {lang.t('group')} {entry.group}",
            ),
            (lang.t("published_at"), escape(_date(entry.published_at))),
            (lang.t("scored_items"), f"{report.scored_items:,}"),
        ]
    )
    overall = (
        f'<p><span class="note">{lang.t("overall")}</span><br>'
        f'<span class="big" data-field="overall">{_num(report.overall.value)}</span> '
        f'<span class="note">{lang.t("interval")} [<span data-field="overall-low">'
        f'{_num(report.overall.low)}</span>, <span data-field="overall-high">'
        f"{_num(report.overall.high)}</span>]"
        + (f" · {lang.t('equated')} {_num(report.equated)}" if report.equated is not None else "")
        + "</span></p>"
    )
    if report.partial:
        missing = [
            (
                lang.t("missing_dimensions"),
                ", ".join(lang.dim(c) for c in report.missing_dimensions),
            ),
            (lang.t("missing_datasets"), ", ".join(report.missing_datasets)),
        ]
        mark = _partial_text(
            lang, len(report.dimensions), report.missing_dimensions, report.missing_datasets
        )
        overall += (
            f'<div class="partial" data-field="partial"><p><span class="badge">{escape(mark)}'
            f"</span> {escape(lang.t('partial.report').format(have=len(report.dimensions)))}</p>"
            + _meta([(k, escape(v) or lang.t("none")) for k, v in missing])
            + "</div>"
        )
    chart = radar(
        [(lang.dim(c), report.dimensions[c]) for c in codes],
        f"{name}: {lang.t('radar')}",
        lang.t("radar.desc"),
    )
    dim_rows = [
        f'<tr><th scope="row">{escape(lang.dim(c))}</th>'
        + _score_cell(report.dimensions[c], "dimension", f' data-dimension="{escape(c)}"')
        + "</tr>"
        for c in codes
    ]
    dims = _table(
        lang,
        lang.t("per_dimension"),
        f'<th scope="col">{lang.t("dimension")}</th>'
        f'<th scope="col" class="num">{lang.t("score")}<span class="ci">'
        f"{lang.t('interval')}</span></th>",
        dim_rows,
    )
    order = {c: i for i, c in enumerate(codes)}
    ds_rows = [
        f'<tr data-dataset="{escape(d.dataset)}"><th scope="row">{escape(d.dataset)}</th>'
        f"<td>{escape(lang.dim(d.dimension))}</td>"
        f"<td><code>{escape(lang.snapshot.metrics.get(d.dataset, '-'))}</code></td>"
        f'<td class="num">{d.items:,}</td><td class="num">{d.units:,}</td>'
        f"<td>{escape(d.rule) or '-'}</td>" + _score_cell(d.score, "dataset") + "</tr>"
        for d in sorted(report.datasets, key=lambda d: (order.get(d.dimension, 99), d.dataset))
    ]
    datasets = _table(
        lang,
        lang.t("per_dataset"),
        "".join(
            f'<th scope="col"{cls}>{lang.t(k)}</th>'
            for k, cls in (
                ("dataset", ""),
                ("dimension", ""),
                ("metric", ""),
                ("items", ' class="num"'),
                ("units", ' class="num"'),
                ("rule", ""),
            )
        )
        + f'<th scope="col" class="num">{lang.t("score")}<span class="ci">'
        f"{lang.t('interval')}</span></th>",
        ds_rows,
    )
    lineage = _meta([(lang.t(key), _lineage(lang, v)) for key, v in report.lineage.items()])
    return (
        f"<h1>{escape(name)}</h1>"
        f'<p class="note">{lang.t("submission")} <code>{escape(entry.submission_id)}</code></p>'
        f"{meta}{overall}"
        f"<h2>{lang.t('dimensions')}</h2>"
        f"<figure>{chart}<figcaption>{escape(lang.t('radar'))}</figcaption></figure>{dims}"
        f"<h2>{lang.t('per_dataset')}</h2>{datasets}"
        f'<h2>{lang.t("lineage")}</h2><p class="note">{lang.t("lineage.note")}</p>{lineage}'
    )


def _home_body(lang: _Lang) -> str:
    parts = [f"<h1>{escape(lang.t('site'))}</h1>", f'<p class="note">{lang.t("boards.note")}</p>']
    for track in TRACKS:
        cards = []
        for b in lang.snapshot.boards:
            if b.track != track:
                continue
            latest = b.cycles[0] if b.cycles else None
            entries = b.entries[latest] if latest is not None else ()
            summary = (
                f"<p>{lang.t('cycle')} {escape(lang.cycle(latest))} · {len(entries)} "
                f"{lang.t('entries')}</p>"
                if latest is not None
                else f'<p class="note">{lang.t("empty")}</p>'
            )
            # The top entry is the first ranked one: a partial entry is never at the top.
            top = next((e for e in entries if not e.partial), None)
            if top is not None:
                summary += (
                    f'<p>{lang.t("top")}: <a href="{submission_page(top.submission_id)}">'
                    f"{escape(top.model_name)}</a> {_num(top.overall.value)}</p>"
                )
            cards.append(
                f'<section class="card"><h3><a href="{board_page(b)}">'
                f"{escape(lang.board(b.board))}</a></h3>{summary}</section>"
            )
        parts.append(
            f'<h2>{escape(lang.track(track))}</h2><div class="cards">{"".join(cards)}</div>'
        )
    parts.append(f'<p><a href="methods.html">{lang.t("methods")}</a></p>')
    return "".join(parts)


def _methods_body(lang: _Lang) -> str:
    parts = [f"<h1>{lang.t('methods')}</h1>"]
    for heading, paragraphs in METHODS[lang.code]:
        parts.append(f"<h2>{escape(heading)}</h2>")
        parts += [f"<p>{escape(p)}</p>" for p in paragraphs]
    if lang.snapshot.registry_version:
        parts.append(
            f'<p class="note">{lang.t("registry")}: '
            f"<code>{escape(lang.snapshot.registry_version)}</code></p>"
        )
    return "".join(parts)


def render_site(snapshot: Snapshot) -> dict[str, bytes]:
    """Every file of the site, by path relative to its root."""
    files: dict[str, str] = {}
    for code in LANGS:
        lang = _Lang(code, snapshot)

        def add(name: str, title: str, body: str, current: str = "", code: str = code) -> None:
            files[f"{code}/{name}"] = _page(_Lang(code, snapshot), name, title, body, current)

        add("index.html", lang.t("site"), _home_body(lang))
        add("methods.html", lang.t("methods"), _methods_body(lang))
        for board in snapshot.boards:
            title = f"{lang.track(board.track)} · {lang.board(board.board)}"
            nav = board_page(Board(board.track, "api", (), {}))
            latest = board.cycles[0] if board.cycles else None
            pages = [(board_page(board), title, latest)] + [
                (board_page(board, c), f"{title} · {lang.cycle(c)}", c) for c in board.cycles
            ]
            for name, page_title, cycle in pages:
                rows = len(board.entries[cycle]) if cycle is not None else 0
                for part in range(1, page_count(rows) + 1):
                    body = _board_body(lang, board, cycle, name, part)
                    add(part_page(name, part), page_title, body, nav)
            history = f"{title} · {lang.t('history.title')}"
            for part in range(1, page_count(len(_history(board))) + 1):
                body = _history_body(lang, board, part)
                add(part_page(history_page(board), part), history, body, nav)
            for cycle in board.cycles:
                for entry in board.entries[cycle]:
                    report = snapshot.reports.get(entry.submission_id)
                    if report is None:
                        continue
                    add(
                        submission_page(entry.submission_id),
                        entry.model_name,
                        _submission_body(lang, board, entry, report),
                        nav,
                    )
    files["index.html"] = (
        '<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="refresh" content="0; url=zh/index.html">\n'
        "<title>MedBench</title>\n</head>\n<body>\n"
        '<p><a href="zh/index.html">中文</a> · <a href="en/index.html" lang="en">English</a></p>\n'
        "</body>\n</html>\n"
    )
    out = {path: text.encode() for path, text in files.items()}
    out["assets/site.css"] = stylesheet()
    return out


def published_ids(snapshot: Snapshot) -> set[str]:
    """Submission ids the site shows (every one is on a board)."""
    return {e.submission_id for b in snapshot.boards for es in b.entries.values() for e in es}
