"""Charts as inline SVG (no script, no external file): a radar of dimension scores with each
dimension's 95% interval as a whisker on its axis, or bars when there are fewer than three."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from medbench_site.snapshot import Score

WIDTH = 560
HEIGHT = 420
RADIUS = 150
GRID = (20, 40, 60, 80, 100)


def _f(x: float) -> str:
    return f"{x:.1f}"


def _point(cx: float, cy: float, angle: float, value: float) -> tuple[float, float]:
    r = RADIUS * max(0.0, min(100.0, value)) / 100
    return cx + r * math.cos(angle), cy + r * math.sin(angle)


def _polygon(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{_f(x)},{_f(y)}" for x, y in points)


def _open(
    width: int,
    height: int,
    scores: Sequence[tuple[str, Score]],
    title: str,
    desc: str,
    chart_id: str,
) -> str:
    """The svg element's start, with a title and a description that lists every score (what a
    screen reader reads instead of the picture)."""
    listed = "; ".join(
        f"{escape(label)} {s.value:.1f} [{s.low:.1f}, {s.high:.1f}]" for label, s in scores
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(desc)}: {listed}</desc>'
    )


def radar(
    scores: Sequence[tuple[str, Score]], title: str, desc: str, chart_id: str = "radar"
) -> str:
    """``scores``: (label, score) per dimension, in display order."""
    if len(scores) < 3:
        return bars(scores, title, desc, chart_id)
    cx, cy = WIDTH / 2, HEIGHT / 2
    angles = [-math.pi / 2 + 2 * math.pi * i / len(scores) for i in range(len(scores))]
    parts = [_open(WIDTH, HEIGHT, scores, title, desc, chart_id)]
    for level in GRID:
        ring = [_point(cx, cy, a, level) for a in angles]
        parts.append(f'<polygon class="grid" points="{_polygon(ring)}"/>')
    for a in angles:
        x, y = _point(cx, cy, a, 100)
        parts.append(f'<line class="axis" x1="{_f(cx)}" y1="{_f(cy)}" x2="{_f(x)}" y2="{_f(y)}"/>')
    for level in GRID[1::2]:
        x, y = _point(cx, cy, angles[0], level)
        parts.append(f'<text class="tick" x="{_f(x + 4)}" y="{_f(y + 4)}">{level}</text>')
    shape = [_point(cx, cy, a, s.value) for a, (_, s) in zip(angles, scores, strict=True)]
    parts.append(f'<polygon class="shape" points="{_polygon(shape)}"/>')
    for a, (_, s) in zip(angles, scores, strict=True):
        (x1, y1), (x2, y2) = _point(cx, cy, a, s.low), _point(cx, cy, a, s.high)
        parts.append(
            f'<line class="whisker" x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}"/>'
        )
        x, y = _point(cx, cy, a, s.value)
        parts.append(f'<circle class="dot" cx="{_f(x)}" cy="{_f(y)}" r="3.5"/>')
    for a, (label, s) in zip(angles, scores, strict=True):
        x, y = _point(cx, cy, a, 100)
        x += 14 * math.cos(a)
        y += 14 * math.sin(a) + 4
        anchor = "middle" if abs(math.cos(a)) < 0.3 else ("start" if math.cos(a) > 0 else "end")
        parts.append(
            f'<text class="label" x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}">'
            f"{escape(label)} {s.value:.1f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def bars(scores: Sequence[tuple[str, Score]], title: str, desc: str, chart_id: str) -> str:
    """Horizontal bars with interval whiskers (for one or two dimensions, e.g. a partial
    report's): each label on its own line above its bar, so a long name is never cut, and room
    on the right for the value of a full bar."""
    left, width, row = 10, WIDTH - 80, 52
    height = 20 + row * len(scores)
    parts = [_open(WIDTH, height, scores, title, desc, chart_id)]
    for i, (label, s) in enumerate(scores):
        y = 10 + i * row
        w = width * max(0.0, min(100.0, s.value)) / 100
        lo, hi = left + width * s.low / 100, left + width * s.high / 100
        parts += [
            f'<text class="label" x="{left}" y="{y + 14}">{escape(label)}</text>',
            f'<rect class="bar" x="{left}" y="{y + 22}" width="{_f(w)}" height="18"/>',
            f'<line class="whisker" x1="{_f(lo)}" y1="{y + 31}" x2="{_f(hi)}" y2="{y + 31}"/>',
            f'<text class="tick" x="{_f(left + w + 6)}" y="{y + 35}">{s.value:.1f}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)
