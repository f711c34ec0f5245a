"""Box and mask overlap (IoU), optimal box matching, and MedDetect's two components (pure).

MedDetect's spec is ``box_iou+label_accuracy``. Both components read the answer and the key
the same way (``parse_detections`` over the JSON value ``extract_json`` finds), so key order,
white space, JSON layout and number formats (1, 1.0, "1") never change a score:

- ``box_iou``: class-gated IoU of optimally matched lesions, summed and divided by
  max(#answer lesions, #key lesions) (``detection_score``): where the lesions are.
- ``label_accuracy`` on a box item (``label_agreement``): the multiset of the lesions' class
  sets, compared without their boxes: the size of the multiset intersection divided by the
  same max(#answer lesions, #key lesions). It is the "class match" half of the metric, so it
  deliberately ignores location: matching labels per IoU-matched box would repeat box_iou's
  localisation (box_iou is already class-gated) and give a right class on a badly placed box
  nothing on either component. Counting a multiset rather than a set makes a missed or extra
  lesion cost the same share on both components. "无病变" (no lesion) is the empty multiset,
  so a clean image answered as clean scores 1 on both.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from metric_scorer.core.structured import canonical_json, extract_json, item_result, normalise_text
from metric_scorer.core.types import ItemKey, ItemResult, Metric

Box = tuple[float, float, float, float]
"""[x1, y1, x2, y2]: top-left and bottom-right corners, continuous coordinates."""

COORDINATE_MAX = 1000.0
"""MedDetect prompts normalise coordinates to [0, 1000]."""

NO_LESION = "无病变"
CLASS_FIELD = "类别"
BOX_FIELD = "边界框"


def box_area(box: Sequence[float]) -> float:
    """Area of box; zero for a degenerate (x2 == x1 or y2 == y1) or inverted box."""
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes.

    Coordinates are continuous (a box [0, 0, 10, 10] has area 100), so boxes that only touch
    have IoU 0. Degenerate or inverted boxes (x2 <= x1 or y2 <= y1) are NOT reordered: the
    MedDetect prompt demands x2 > x1 and y2 > y1, and a box that breaks that locates nothing.
    They have zero area, so their IoU with any box, themselves included, is 0.0.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    width = min(ax2, bx2) - max(ax1, bx1)
    height = min(ay2, by2) - max(ay1, by1)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = box_area(a) + box_area(b) - inter
    return min(1.0, inter / union) if union > 0 else 0.0


def iou_matrix(
    pred: Sequence[Sequence[float]], gold: Sequence[Sequence[float]]
) -> npt.NDArray[np.float64]:
    """IoU of every pred box (rows) with every gold box (columns), as box_iou computes it."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gold, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0])
    height = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1])
    overlaps = (width > 0) & (height > 0)
    inter = np.where(overlaps, width * height, 0.0)

    union = _areas(p)[:, None] + _areas(g)[None, :] - inter
    # As box_iou: a union that underflows to 0 (vanishing boxes) gives IoU 0, not 0/0.
    counted = overlaps & (union > 0)
    safe_union = np.where(counted, union, 1.0)
    return np.where(counted, np.minimum(1.0, inter / safe_union), 0.0)


def _areas(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    widths = np.maximum(0.0, boxes[:, 2] - boxes[:, 0])
    return widths * np.maximum(0.0, boxes[:, 3] - boxes[:, 1])


def assign(weights: npt.NDArray[np.float64]) -> list[tuple[int, int, float]]:
    """Row-to-column pairs of maximum total weight; pairs of weight 0 are left out, since
    pairing boxes that do not overlap matches nothing."""
    if weights.size == 0:
        return []
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [
        (int(i), int(j), float(weights[i, j]))
        for i, j in zip(rows, cols, strict=True)
        if weights[i, j] > 0
    ]


def match_boxes(
    pred: Sequence[Sequence[float]], gold: Sequence[Sequence[float]]
) -> list[tuple[int, int, float]]:
    """One-to-one (pred index, gold index, IoU) pairs maximising total IoU, sorted by pred
    index; boxes left unmatched, or matched only at IoU 0, do not appear."""
    return assign(iou_matrix(pred, gold))


def mask_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """IoU of two masks (non-zero = inside); two empty masks agree perfectly, so score 1.0.

    Raises:
        ValueError: the masks differ in shape.
    """
    ma = np.asarray(a).astype(bool)
    mb = np.asarray(b).astype(bool)
    if ma.shape != mb.shape:
        raise ValueError(f"mask shapes differ: {ma.shape} vs {mb.shape}")
    union = int(np.count_nonzero(ma | mb))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(ma & mb)) / union


def mask_box(mask: npt.ArrayLike) -> tuple[int, int, int, int] | None:
    """Tight box of a 2-D mask as inclusive pixel indices (x_min, y_min, x_max, y_max), the
    convention of SAM-Med2D's boxes_from_masks.jsonl; None for an empty mask."""
    m = np.asarray(mask).astype(bool)
    cols = np.flatnonzero(m.any(axis=0))
    rows = np.flatnonzero(m.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def normalise_pixel_box(box: Sequence[int], width: int, height: int) -> Box:
    """An inclusive pixel box as continuous [0, 1000] coordinates, the MedDetect frame: pixel
    x_max covers up to x_max + 1, so a full-image box becomes (0, 0, 1000, 1000)."""
    x1, y1, x2, y2 = box
    sx, sy = COORDINATE_MAX / width, COORDINATE_MAX / height
    return x1 * sx, y1 * sy, (x2 + 1) * sx, (y2 + 1) * sy


@dataclass(frozen=True)
class Detection:
    """One lesion a MedDetect answer or key claims."""

    labels: frozenset[str]
    """Class names after normalise_text."""
    box: Box | None
    """Clipped to [0, 1000]; None when the entry has no usable box (it still counts)."""


def parse_detections(value: Any) -> list[Detection]:
    """Lesions in a MedDetect JSON value (an array of {"类别", "边界框"} objects, or one object).

    Entries declaring no lesion (类别 exactly ["无病变"]) and entries claiming nothing (no
    class, no box) are dropped, so `[{"类别": ["无病变"], "边界框": []}]` equals `[]`. Any other
    entry counts, with box None when 边界框 is not four finite numbers: a claimed lesion that
    cannot be located is a false positive, not something to ignore.
    """
    entries = [value] if isinstance(value, dict) else value
    if not isinstance(entries, list):
        return []
    found: list[Detection] = []
    for entry in entries:
        if not isinstance(entry, dict):
            found.append(Detection(labels=frozenset(), box=None))
            continue
        labels = _labels(entry.get(CLASS_FIELD))
        box = _box(entry.get(BOX_FIELD))
        if labels == {NO_LESION} or (not labels and box is None and not entry.get(BOX_FIELD)):
            continue
        found.append(Detection(labels=labels, box=box))
    return found


def detection_score(pred: Sequence[Detection], gold: Sequence[Detection]) -> float:
    """Sum over matched pairs of IoU x (1 if the class sets agree else 0), divided by
    max(len(pred), len(gold)); 1.0 when both are empty.

    Pairs are chosen to maximise that sum, i.e. matching on class-gated IoU: matching on raw
    IoU first could pair a box with a wrong-class neighbour and leave the right-class box
    unpaired, scoring an answer below what its boxes deserve.
    """
    if not pred and not gold:
        return 1.0
    weights = np.zeros((len(pred), len(gold)))
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            if p.box is not None and g.box is not None and p.labels == g.labels:
                weights[i, j] = box_iou(p.box, g.box)
    total = sum(iou for _, _, iou in assign(weights))
    return min(1.0, total / max(len(pred), len(gold)))


def label_agreement(pred: Sequence[Detection], gold: Sequence[Detection]) -> float:
    """Share of lesions whose class set the other side also claims, boxes ignored: the size of
    the multiset intersection of the class sets divided by max(len(pred), len(gold)); 1.0 when
    both are empty (see the module docstring for why location is left out)."""
    if not pred and not gold:
        return 1.0
    common = Counter(p.labels for p in pred) & Counter(g.labels for g in gold)
    return sum(common.values()) / max(len(pred), len(gold))


def _is_detection_value(value: Any) -> bool:
    if isinstance(value, dict):
        return CLASS_FIELD in value or BOX_FIELD in value
    return isinstance(value, list) and all(isinstance(entry, dict) for entry in value)


def box_iou_metric(answer: str, key: ItemKey) -> ItemResult:
    """MedDetect: class-gated box IoU of the answer's lesions against the key's.

    An answer without a JSON array (or object) of lesions scores 0, even when the key has no
    lesion: the prompt demands JSON, and prose cannot be told from a truncated answer.

    Raises:
        ValueError: the key is not a JSON array of lesions with valid boxes.
    """
    gold = _gold(key)
    found = extract_json(answer, accept=_is_detection_value)
    if found is None:
        return item_result(key, 0.0, "")
    return item_result(key, detection_score(parse_detections(found), gold), canonical_json(found))


def box_label_metric(answer: str, key: ItemKey) -> ItemResult:
    """MedDetect's label component: label_agreement of the answer's lesions with the key's,
    both parsed as box_iou_metric parses them (an answer without lesion JSON scores 0).

    Raises:
        ValueError: the key is not a JSON array of lesions with valid boxes.
    """
    gold = _gold(key)
    found = extract_json(answer, accept=_is_detection_value)
    if found is None:
        return item_result(key, 0.0, "")
    pred = parse_detections(found)
    parsed = "|".join(sorted(",".join(sorted(p.labels)) for p in pred)) or NO_LESION
    return item_result(key, label_agreement(pred, gold), parsed)


def is_detection_reference(reference: Sequence[str]) -> bool:
    """Whether a sealed reference is one MedDetect lesion array (as box_iou reads it), not a
    closed label set: one JSON array whose entries are all objects naming 类别 or 边界框."""
    if len(reference) != 1:
        return False
    try:
        value = json.loads(reference[0])
    except json.JSONDecodeError:
        return False
    return isinstance(value, list) and all(
        isinstance(entry, dict) and (CLASS_FIELD in entry or BOX_FIELD in entry) for entry in value
    )


METRICS: dict[str, Metric] = {"box_iou": box_iou_metric}


def _gold(key: ItemKey) -> list[Detection]:
    if not key.reference:
        raise ValueError(f"item {key.item_id!r}: box_iou needs a JSON array reference")
    try:
        value = json.loads(key.reference[0])
    except json.JSONDecodeError as exc:
        raise ValueError(f"item {key.item_id!r}: reference is not JSON: {exc}") from exc
    if not isinstance(value, list):
        raise ValueError(f"item {key.item_id!r}: reference must be a JSON array of lesions")
    gold = parse_detections(value)
    if any(g.box is None or box_area(g.box) == 0 for g in gold):
        raise ValueError(f"item {key.item_id!r}: every reference lesion needs a valid box")
    return gold


def _labels(value: Any) -> frozenset[str]:
    # The prompt asks for an array of one name; a bare string is the same claim.
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(n for n in (normalise_text(x) for x in names if isinstance(x, str)) if n)


def _box(value: Any) -> Box | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    coords: list[float] = []
    for v in value:
        if isinstance(v, bool):
            return None
        try:
            c = float(v)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(c):
            return None
        # Area outside the image cannot overlap a lesion, so it should not dilute the IoU.
        coords.append(min(COORDINATE_MAX, max(0.0, c)))
    x1, y1, x2, y2 = coords
    return x1, y1, x2, y2
