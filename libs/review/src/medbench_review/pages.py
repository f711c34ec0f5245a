"""Server-rendered pages of the review app: plain HTML forms, no script, no external asset."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from medbench.judge.v1 import judge_service_pb2
from medbench_review.ratings_file import RowError
from medbench_review.text import HTML_LANG, t


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float) -> str:
    return f"{x:g}"


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def layout(
    lang: str,
    title: str,
    body: str,
    path: str,
    csrf: str = "",
    who: str = "",
) -> str:
    """A full page: skip link, header with navigation (when signed in) and language switch."""
    other = "en" if lang == "zh" else "zh"
    switch = (
        f'<a href="/lang/{other}?next={esc(path)}" lang="{HTML_LANG[other]}" '
        f'hreflang="{HTML_LANG[other]}" aria-label="{esc(t(lang, "other_lang_label"))}">'
        f"{esc(t(lang, 'other_lang'))}</a>"
    )
    nav = ""
    if who:
        nav = (
            f'<nav aria-label="{esc(t(lang, "nav"))}"><ul>'
            f'<li><a href="/">{esc(t(lang, "queue"))}</a></li>'
            f'<li><a href="/import">{esc(t(lang, "import"))}</a></li>'
            f'<li><a href="/calibration">{esc(t(lang, "calibration"))}</a></li>'
            f"</ul></nav>"
            f"<p>{esc(t(lang, 'signed_in_as'))}: <code>{esc(who)}</code></p>"
            f'<form class="inline" method="post" action="/signout">{csrf_field(csrf)}'
            f'<button type="submit">{esc(t(lang, "signout"))}</button></form>'
        )
    return (
        "<!doctype html>\n"
        f'<html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · {esc(t(lang, 'app'))}</title>"
        '<link rel="stylesheet" href="/style.css"></head><body>'
        f'<a class="skip" href="#main">{esc(t(lang, "skip"))}</a>'
        f"<header><p><strong>{esc(t(lang, 'app'))}</strong></p>{nav}{switch}</header>"
        f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{body}</main></body></html>\n'
    )


def signin_page(lang: str, csrf: str, error: str = "") -> tuple[str, str]:
    alert = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        f"{alert}<p>{esc(t(lang, 'signin_intro'))}</p>"
        f'<form method="post" action="/signin">{csrf_field(csrf)}'
        f'<p><label for="key">{esc(t(lang, "api_key"))}</label><br>'
        '<input id="key" name="key" type="password" autocomplete="off" required size="60" '
        'maxlength="200" spellcheck="false"></p>'
        f'<p><button type="submit">{esc(t(lang, "signin"))}</button></p></form>'
    )
    return t(lang, "signin"), body


def queue_page(
    lang: str, csrf: str, open_count: int, more: bool, mine: Sequence[judge_service_pb2.Review]
) -> tuple[str, str]:
    count = f"{open_count}+" if more else str(open_count)
    parts = [f"<p>{esc(t(lang, 'blind_note'))}</p>"]
    if open_count:
        parts.append(f"<p>{esc(t(lang, 'open_count', n=count))}</p>")
        parts.append(
            f'<form method="post" action="/claim">{csrf_field(csrf)}'
            f'<button type="submit" id="claim">{esc(t(lang, "claim_next"))}</button></form>'
        )
    else:
        parts.append(f"<p>{esc(t(lang, 'none_open'))}</p>")
    if mine:
        rows = "".join(
            f'<li><a href="/review/{esc(r.review_id)}">{esc(t(lang, "continue"))}: '
            f"{esc(r.dataset)} · {esc(r.review_id[:8])}</a> "
            f"({esc(t(lang, 'lease_until'))} {esc(r.lease_until.ToDatetime().isoformat())})</li>"
            for r in mine
        )
        parts.append(f"<h2>{esc(t(lang, 'my_claims'))}</h2><ul>{rows}</ul>")
    return t(lang, "queue"), "".join(parts)


def scale_points(rubric: dict[str, Any]) -> list[int]:
    """The integer points of the rubric's scale, ascending."""
    scale = rubric.get("scale", {})
    low, high = int(scale.get("min", 0)), int(scale.get("max", 0))
    return list(range(low, high + 1))


def _radio_group(
    name: str, legend: str, points: Iterable[int], chosen: str, described: str = ""
) -> str:
    radios = "".join(
        f'<label><input type="radio" name="{esc(name)}" value="{p}" required'
        f"{' checked' if chosen == str(p) else ''}> {p}</label>"
        for p in points
    )
    desc_id = f"{name}-desc"
    desc = f'<p id="{esc(desc_id)}">{esc(described)}</p>' if described else ""
    aria = f' aria-describedby="{esc(desc_id)}"' if described else ""
    return f'<fieldset class="scale"{aria}><legend>{esc(legend)}</legend>{desc}{radios}</fieldset>'


def images_section(lang: str, review: judge_service_pb2.Review) -> str:
    """The item's images inline, each from this app's own route (the bank's bytes, fetched
    with the signed-in user's key), with alt text and a link to open it full size."""
    if not review.image_ids:
        return ""
    total = len(review.image_ids)
    figures = "".join(
        f'<li><figure id="image-{n}"><img src="{esc(url)}" '
        f'alt="{esc(t(lang, "image_alt", n=n, total=total, id=image_id[:12]))}">'
        f'<figcaption><a id="open-image-{n}" href="{esc(url)}" target="_blank" rel="noopener">'
        f"{esc(t(lang, 'image_open', n=n))}</a></figcaption></figure></li>"
        for n, image_id in enumerate(review.image_ids, 1)
        for url in (_image_url(review.review_id, image_id),)
    )
    return f'<h2 id="images">{esc(t(lang, "images"))}</h2><ol class="images">{figures}</ol>'


def _image_url(review_id: str, image_id: str) -> str:
    return f"/review/{review_id}/image/{image_id}"


def review_page(
    lang: str,
    csrf: str,
    review: judge_service_pb2.Review,
    chosen: dict[str, str] | None = None,
    error: str = "",
) -> tuple[str, str]:
    """The item, the rubric and a form with one radio group per criterion and one overall."""
    rubric = json.loads(review.rubric_json) if review.rubric_json else {}
    points = scale_points(rubric)
    chosen = chosen or {}
    alert = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    key_points = "".join(f"<li>{esc(p)}</li>" for p in review.key_points)
    anchors = "".join(
        f"<li><strong>{esc(_num(a['score']))}</strong>: {esc(a['description'])}</li>"
        for a in rubric.get("scale", {}).get("anchors", [])
    )
    instructions = "".join(f"<li>{esc(i)}</li>" for i in rubric.get("instructions", []))
    criteria = "".join(
        _radio_group(
            f"c{i}",
            f"{c['name']}（{t(lang, 'weight')} {c['weight']:g}）"
            if lang == "zh"
            else f"{c['name']} ({t(lang, 'weight')} {c['weight']:g})",
            points,
            chosen.get(f"c{i}", ""),
            c.get("description", ""),
        )
        for i, c in enumerate(rubric.get("criteria", []))
    )
    body = (
        f"{alert}<p>{esc(t(lang, 'blind_note'))}</p>"
        f"<dl><dt>{esc(t(lang, 'dataset'))}</dt><dd>{esc(review.dataset)}</dd>"
        f"<dt>{esc(t(lang, 'dimension'))}</dt><dd>{esc(review.dimension or '—')}</dd>"
        f"<dt>{esc(t(lang, 'rubric'))}</dt><dd>{esc(rubric.get('title', review.rubric_id))} "
        f"({esc(review.rubric_id)} v{review.rubric_version})</dd>"
        f"<dt>{esc(t(lang, 'lease_until'))}</dt>"
        f"<dd>{esc(review.lease_until.ToDatetime().isoformat())}</dd></dl>"
        f'<h2 id="q">{esc(t(lang, "question"))}</h2><div class="box" lang="zh-CN">'
        f"{esc(review.question)}</div>{images_section(lang, review)}"
        f'<h2>{esc(t(lang, "reference"))}</h2><div class="box" lang="zh-CN">'
        f"{esc(review.reference or '—')}</div>"
        f'<h2>{esc(t(lang, "key_points"))}</h2><ol lang="zh-CN">{key_points}</ol>'
        f'<h2 id="answer">{esc(t(lang, "answer"))}</h2><div class="box" lang="zh-CN">'
        f"{esc(review.answer)}</div>"
        f'<h2>{esc(t(lang, "rubric"))}</h2><p lang="zh-CN">'
        f"{esc(rubric.get('description', ''))}</p>"
        f'<h3>{esc(t(lang, "anchors"))}</h3><ul lang="zh-CN">{anchors}</ul>'
        f'<h3>{esc(t(lang, "instructions"))}</h3><ol lang="zh-CN">{instructions}</ol>'
        f'<form method="post" action="/review/{esc(review.review_id)}">{csrf_field(csrf)}'
        f"<h2>{esc(t(lang, 'criteria'))}</h2>{criteria}"
        + _radio_group(
            "overall",
            t(lang, "overall"),
            points,
            chosen.get("overall", ""),
            t(lang, "overall_hint"),
        )
        + f'<p><button type="submit" id="submit">{esc(t(lang, "submit"))}</button></p></form>'
    )
    return f"{t(lang, 'review')} {review.review_id[:8]}", body


def submitted_page(lang: str, csrf: str, open_left: bool) -> tuple[str, str]:
    body = f'<p class="ok" role="status">{esc(t(lang, "submitted_body"))}</p>'
    if open_left:
        body += (
            f'<form method="post" action="/claim">{csrf_field(csrf)}'
            f'<button type="submit" id="claim">{esc(t(lang, "claim_next"))}</button></form>'
        )
    body += f'<p><a href="/">{esc(t(lang, "back_queue"))}</a></p>'
    return t(lang, "submitted"), body


COLUMN_DOCS: tuple[tuple[str, str, str], ...] = (
    ("item_id", "必填：条目的稳定编号", "required: a stable id of the rated item"),
    ("dataset", "数据集代码（决定评分标准）", "dataset code (chooses the rubric)"),
    ("rubric_id", "可选：评分标准编号（优先于数据集）", "optional: rubric id (wins over dataset)"),
    ("dimension", "可选：能力维度", "optional: capability dimension"),
    ("question", "必填：问题", "required: the question"),
    ("reference", "可选：参考答案", "optional: reference answer"),
    (
        "key_points",
        "可选：JSON 列表，或以 | 分隔",
        "optional: a JSON list, or points separated by |",
    ),
    ("answer", "必填：被评回答", "required: the rated answer"),
    ("score", "必填：医师总分（评分标准量表上）", "required: the physician's overall score"),
    ("rater_id", "必填：医师化名编号", "required: pseudonymous physician id"),
    (
        "criterion:<名称>",
        "可选：每个分项一列（全部或都不填）；JSONL 中为 criteria 对象",
        "optional: one column per criterion (all or none); in JSONL a criteria object",
    ),
)


def import_page(lang: str, csrf: str) -> tuple[str, str]:
    rows = "".join(
        f'<tr><th scope="row"><code>{esc(c)}</code></th><td>{esc(en if lang == "en" else zh)}'
        "</td></tr>"
        for c, zh, en in COLUMN_DOCS
    )
    body = (
        f"<p>{esc(t(lang, 'import_intro'))}</p>"
        f'<form method="post" action="/import" enctype="multipart/form-data">{csrf_field(csrf)}'
        f'<p><label for="file">{esc(t(lang, "file"))}</label><br>'
        '<input id="file" name="file" type="file" accept=".csv,.jsonl,.ndjson" required></p>'
        f'<p><button type="submit" id="upload">{esc(t(lang, "upload"))}</button></p></form>'
        f'<h2>{esc(t(lang, "columns"))}</h2><table><thead><tr><th scope="col">'
        f'{esc(t(lang, "column"))}</th><th scope="col">{esc(t(lang, "meaning"))}</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )
    return t(lang, "import"), body


def _problems(lang: str, caption: str, rows: Iterable[tuple[int, str, str]]) -> str:
    body = "".join(f"<tr><td>{n}</td><td>{esc(f)}</td><td>{esc(r)}</td></tr>" for n, f, r in rows)
    if not body:
        return ""
    return (
        f'<h2>{esc(caption)}</h2><table><thead><tr><th scope="col">{esc(t(lang, "row"))}</th>'
        f'<th scope="col">{esc(t(lang, "field"))}</th><th scope="col">'
        f"{esc(t(lang, 'reason'))}</th></tr></thead><tbody>{body}</tbody></table>"
    )


def import_result_page(
    lang: str,
    response: judge_service_pb2.ImportRatingsResponse,
    rows: Sequence[int],
    unreadable: Sequence[RowError],
) -> tuple[str, str]:
    """rows[i]: the file row of the i-th rating sent (the service reports stream positions)."""
    body = (
        f'<p class="ok" role="status" id="import-result">'
        f"{esc(t(lang, 'imported', n=response.imported))}; "
        f"{esc(t(lang, 'replaced', n=response.replaced))}</p>"
        f'<p>{esc(t(lang, "then_measure"))} <a href="/calibration">'
        f"{esc(t(lang, 'calibration'))}</a></p>"
    )
    body += _problems(
        lang,
        t(lang, "rejected"),
        (
            (rows[r.index] if r.index < len(rows) else r.index, r.field, r.reason)
            for r in response.rejected
        ),
    )
    body += _problems(lang, t(lang, "unreadable"), ((e.row, e.field, e.reason) for e in unreadable))
    return t(lang, "import_done"), body


def calibration_index_page(lang: str, rubrics: Sequence[str]) -> tuple[str, str]:
    links = "".join(f'<li><a href="/calibration/{esc(r)}">{esc(r)}</a></li>' for r in rubrics)
    body = (
        '<form method="get" action="/calibration/show">'
        f'<p><label for="rubric">{esc(t(lang, "rubric_id"))}</label><br>'
        '<input id="rubric" name="rubric" required pattern="[a-z][a-z0-9_]*" maxlength="64"></p>'
        f'<p><label for="version">{esc(t(lang, "version"))}</label><br>'
        '<input id="version" name="version" type="number" min="0" value="0"></p>'
        f'<p><button type="submit">{esc(t(lang, "show"))}</button></p></form>'
        f"<h2>{esc(t(lang, 'known_rubrics'))}</h2><ul>{links}</ul>"
    )
    return t(lang, "calibration"), body


def _interval(k: judge_service_pb2.KappaInterval) -> str:
    return f"{k.kappa:.3f} [{k.low:.3f}, {k.high:.3f}]"


def measure_form(lang: str, csrf: str, rubric_id: str, version: int) -> str:
    return (
        f'<form method="post" action="/calibration/{esc(rubric_id)}/measure">{csrf_field(csrf)}'
        f'<input type="hidden" name="version" value="{version}">'
        f'<button type="submit" id="measure">{esc(t(lang, "measure"))}</button></form>'
    )


def calibration_page(
    lang: str, csrf: str, c: judge_service_pb2.Calibration, version: int
) -> tuple[str, str]:
    verdict = t(lang, "calibrated") if c.calibrated else t(lang, "not_calibrated")
    facts = [
        ("judge", esc(c.judge)),
        ("rubric", f"{esc(c.rubric_id)} v{c.rubric_version} ({esc(c.rubric_hash[:12])})"),
        ("n", f'<span id="n">{c.n}</span>'),
        ("answers", str(c.answers)),
        ("min_ratings", str(c.min_ratings)),
        ("threshold", f"{c.threshold:g}"),
        (
            "kappa_q",
            f'<span id="kappa">{esc(_interval(c.quadratic))}</span>'
            if c.HasField("quadratic")
            else f'<span id="kappa">{c.kappa:.3f}</span>',
        ),
        ("kappa_u", esc(_interval(c.unweighted)) if c.HasField("unweighted") else "—"),
        ("interval_method", esc(c.interval_method or "—")),
        ("judge_failures", str(c.judge_failures)),
        ("measured_at", esc(c.measured_at.ToDatetime().isoformat())),
    ]
    dl = "".join(f"<dt>{esc(t(lang, k))}</dt><dd>{v}</dd>" for k, v in facts)
    body = (
        f'<h2>{esc(t(lang, "gate"))}</h2><p class="{"ok" if c.calibrated else "error"}" '
        f'id="verdict">{esc(verdict)}</p>'
        f'<p>{esc(t(lang, "why"))}: <span lang="en">{esc(c.reason or "—")}</span></p>'
        f"<dl>{dl}</dl>"
    )
    if c.score_bins and c.confusion:
        head = "".join(f'<th scope="col">{esc(_num(b))}</th>' for b in c.score_bins)
        rows = "".join(
            f'<tr><th scope="row">{esc(_num(c.score_bins[i]))}</th>'
            + "".join(f"<td>{n}</td>" for n in row.counts)
            + "</tr>"
            for i, row in enumerate(c.confusion)
        )
        body += (
            f'<h2>{esc(t(lang, "confusion"))}</h2><table id="confusion"><thead><tr>'
            f'<th scope="col">{esc(t(lang, "judge_score"))}</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    if c.dimensions:
        rows = "".join(
            f'<tr><th scope="row">{esc(d.dimension)}</th><td>{d.n}</td><td>{d.answers}</td>'
            f"<td>{esc(_interval(d.quadratic)) if d.HasField('quadratic') else f'{d.kappa:.3f}'}"
            f"</td><td>{esc(_interval(d.unweighted)) if d.HasField('unweighted') else '—'}</td>"
            f"<td>{esc(t(lang, 'yes' if d.passed else 'no'))}</td></tr>"
            for d in c.dimensions
        )
        body += (
            f"<h2>{esc(t(lang, 'per_dimension'))}</h2><table><thead><tr>"
            f'<th scope="col">{esc(t(lang, "dimension"))}</th><th scope="col">n</th>'
            f'<th scope="col">{esc(t(lang, "answers"))}</th>'
            f'<th scope="col">{esc(t(lang, "kappa_q"))}</th>'
            f'<th scope="col">{esc(t(lang, "kappa_u"))}</th>'
            f'<th scope="col">{esc(t(lang, "passed"))}</th></tr></thead><tbody>{rows}</tbody>'
            "</table>"
        )
    if c.HasField("physician_ceiling"):
        p = c.physician_ceiling
        body += (
            f"<h2>{esc(t(lang, 'ceiling'))}</h2><p>{esc(t(lang, 'kappa_q'))}: "
            f"{esc(_interval(p.quadratic))}; {esc(t(lang, 'answers'))} {p.answers}; "
            f"{esc(t(lang, 'pairs'))} {p.pairs}</p>"
        )
    if c.criteria:
        rows = "".join(
            f'<tr><th scope="row">{esc(k.criterion)}</th><td>{k.n}</td><td>{k.answers}</td>'
            f"<td>{esc(_interval(k.quadratic)) if k.HasField('quadratic') else '—'}</td>"
            f"<td>{esc(_interval(k.unweighted)) if k.HasField('unweighted') else '—'}</td></tr>"
            for k in c.criteria
        )
        body += (
            f"<h2>{esc(t(lang, 'per_criterion'))}</h2><p>{esc(t(lang, 'per_criterion_note'))}</p>"
            f'<table id="criteria"><thead><tr>'
            f'<th scope="col">{esc(t(lang, "criterion"))}</th><th scope="col">n</th>'
            f'<th scope="col">{esc(t(lang, "answers"))}</th>'
            f'<th scope="col">{esc(t(lang, "kappa_q"))}</th>'
            f'<th scope="col">{esc(t(lang, "kappa_u"))}</th></tr></thead><tbody>{rows}</tbody>'
            "</table>"
        )
    else:
        body += f"<p>{esc(t(lang, 'per_criterion_absent'))}</p>"
    body += measure_form(lang, csrf, c.rubric_id, version)
    return f"{t(lang, 'calibration')}: {c.rubric_id}", body


def no_calibration_page(
    lang: str, csrf: str, rubric_id: str, version: int, detail: str
) -> tuple[str, str]:
    body = f"<p>{esc(detail)}</p>" + measure_form(lang, csrf, rubric_id, version)
    return f"{t(lang, 'no_calibration')}: {rubric_id}", body


def error_page(lang: str, status: int, detail: str) -> tuple[str, str]:
    key = f"error_{status}"
    summary = t(lang, key) if key in _ERROR_KEYS else t(lang, "error")
    body = f'<p class="error" role="alert">{esc(summary)}</p>'
    if detail:
        body += f'<p>{esc(t(lang, "detail"))}: <span lang="en">{esc(detail)}</span></p>'
    body += f'<p><a href="/">{esc(t(lang, "home"))}</a></p>'
    return f"{status} · {t(lang, 'error')}", body


_ERROR_KEYS = {f"error_{s}" for s in (400, 401, 403, 404, 409, 413, 429, 502, 503)}
