"""The live view of a report (pure): its numbers at the resolution a live hidden pool allows.

While a pool is live (until maintainers disclose it), a partner's report of it is the only
thing that answers back from the hidden keys, and a partner controls what it answers. Exact
per-dataset figures let it difference: answer one question group with a candidate key and the
rest with nothing, and the dataset's count of right items (item mean x items) says whether the
candidate is the key (tests/security/key_recovery.py: +8.7 points of keys beyond chance in two
submissions; +78.6 with per-item results). So every number of a live pool's report is shown at a
resolution no finer than ``LIVE_UNITS`` scoring units of its dataset, and everything else is
computed from the shown numbers alone:

- a dataset's score and item mean: rounded to its step, ``step_for(units)``, the smallest of
  ``STEPS`` that is at least ``100 * LIVE_UNITS / units`` points (a 30-question dataset shows
  0, 10, 20 ... 100; one of 300 questions whole points), after a dither: an offset of up to
  half a step either way, drawn per submission and dataset from a keyed hash (``dithers``:
  the same every time a submission's report is read, unpredictable to its tenant). A question
  group answered right or wrong moves the count by one unit, a third of a step; without the
  dither that would show only at a step's edge, and an adversary who found an edge could test
  one candidate key per submission there (keep the edge, swap one group). With it, each
  submission's rounding goes up with a probability equal to where the score sits between two
  steps: a one-unit change moves that probability by a third, and reading it takes many
  submissions of the same answers (the caps allow ten per cycle). The shown score is unbiased
  and within one step of the exact one;
- a dataset's interval: the 95% Wilson interval of the shown score over its units, widened by
  one step on each side (the dithered rounding). For scores that are not 0/1 (judge, F1) the
  Wilson width is an upper bound (a [0, 1] variable with mean p has variance at most p(1 - p));
- a dimension: the mean of its datasets' shown scores; its half-width the root of the summed
  squared half-widths over the number of datasets (independent datasets); the overall the same
  over the dimensions.

No number of the live view is computed from the item scores again, so it tells nothing the shown
dataset scores do not. Everything countable stays exact (items, units, scored items): they do
not depend on the answers being right. The exact report is kept and shown once the pool is
disclosed (README, "What partners see").
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LIVE_UNITS = 3
"""A live dataset's shown score never resolves fewer than this many of its scoring units."""
STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0)
"""Steps a shown score may have, in points (each divides 100)."""
Z95 = 1.959963984540054


def step_for(units: int, live_units: int = LIVE_UNITS) -> float:
    """The step a dataset of ``units`` scoring units is shown at while its pool is live."""
    if units <= 0:
        return STEPS[-1]
    wanted = 100.0 * live_units / units
    return next((s for s in STEPS if s >= wanted - 1e-9), STEPS[-1])


def shown(value: float, step: float, dither: float = 0.0) -> float:
    """``value`` (0-100) plus ``dither`` steps (in [-0.5, 0.5)) rounded to the nearest multiple
    of ``step`` (halves up), in [0, 100]."""
    multiple = math.floor(value / step + dither + 0.5 + 1e-9)
    return min(100.0, max(0.0, round(multiple * step, 6)))


Dithers = Mapping[str, tuple[float, float]]
"""dataset -> the dither of its score and of its item mean, each in [-0.5, 0.5) steps."""


def dithers(
    key: bytes, submission_id: str, datasets: Iterable[str]
) -> dict[str, tuple[float, float]]:
    """Each dataset's dithers for one submission: HMAC-SHA-256 under the platform's secret
    key, so the same on every read and not computable by the tenant."""
    if not key:
        raise ValueError("live dithers need the platform's secret key")
    out = {}
    for name in datasets:
        mac = hmac.new(key, f"live-view/v1\t{submission_id}\t{name}".encode(), hashlib.sha256)
        raw = mac.digest()
        of_score, of_mean = (int.from_bytes(raw[i : i + 8], "big") / 2**64 - 0.5 for i in (0, 8))
        out[name] = (of_score, of_mean)
    return out


def wilson(score: float, units: int) -> tuple[float, float]:
    """95% Wilson interval (0-100) of a proportion ``score`` / 100 over ``units`` trials."""
    if units <= 0:
        return 0.0, 100.0
    p = score / 100.0
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * units)) / (1 + z2 / units)
    half = Z95 * math.sqrt(p * (1 - p) / units + z2 / (4 * units * units)) / (1 + z2 / units)
    return max(0.0, round(100.0 * (centre - half), 6)), min(
        100.0, round(100.0 * (centre + half), 6)
    )


def _combined(scores: Sequence[float], halves: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of independent estimates with these half-widths."""
    mean = math.fsum(scores) / len(scores)
    half = math.sqrt(math.fsum(h * h for h in halves)) / len(halves)
    return mean, max(0.0, mean - half), min(100.0, mean + half)


def _half(low: float, high: float) -> float:
    return (high - low) / 2.0


def live_view(
    doc: Mapping[str, Any], dither: Dithers | None = None, live_units: int = LIVE_UNITS
) -> dict[str, Any]:
    """The stored report ``doc`` (aggregation's record) with every score at its live
    resolution (module docstring), each dataset rounded after its ``dither`` (none: plain
    rounding); ``live`` set, each dataset's ``step`` set. The record is not changed."""
    datasets = []
    for d in doc["datasets"]:
        units = int(d.get("units") or d.get("items") or 0)
        step = step_for(units, live_units)
        of_score, of_mean = (dither or {}).get(d["dataset"], (0.0, 0.0))
        score = shown(d["score"], step, of_score)
        low, high = wilson(score, units)
        datasets.append(
            {
                **d,
                "score": score,
                "item_mean": shown(d.get("item_mean", d["score"]), step, of_mean),
                "low": max(0.0, round(low - step, 6)),
                "high": min(100.0, round(high + step, 6)),
                "step": step,
            }
        )
    by_dimension: dict[str, list[dict[str, Any]]] = {}
    for d in datasets:
        by_dimension.setdefault(d["dimension"], []).append(d)
    dimensions = []
    for dim in doc["dimensions"]:
        members = by_dimension.get(dim["dimension"], [])
        if not members:  # a dimension without datasets cannot be shown from them
            continue
        score, low, high = _combined(
            [m["score"] for m in members], [_half(m["low"], m["high"]) for m in members]
        )
        dimensions.append({**dim, "score": score, "low": low, "high": high})
    out: dict[str, Any] = {**doc, "datasets": datasets, "dimensions": dimensions, "live": True}
    if dimensions:
        overall, low, high = _combined(
            [d["score"] for d in dimensions], [_half(d["low"], d["high"]) for d in dimensions]
        )
        out.update(overall=overall, overall_low=low, overall_high=high)
    return out


def equated_step(doc: Mapping[str, Any]) -> float:
    """The step an equated score beside a live view is shown at: the overall's resolution
    (the finest of its datasets' steps over their number), never finer than 1 point."""
    steps = [float(d["step"]) for d in doc.get("datasets", []) if "step" in d]
    return max(1.0, min(steps) / len(steps)) if steps else 1.0


def rounded(value: float, step: float) -> float:
    """value rounded to the nearest multiple of step."""
    return round(round(value / step) * step, 6)


def live_equated(equated: float | None, doc: Mapping[str, Any]) -> float | None:
    """An equated score beside a live view, at ``equated_step``."""
    return None if equated is None else rounded(equated, equated_step(doc))
