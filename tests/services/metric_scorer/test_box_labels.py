"""MedDetect's two components on real boxes: box_iou equals an IoU computed here by plain
arithmetic, and label_accuracy reads the lesions' classes from the parsed boxes."""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metric_scorer.core.components import plan, score_objective
from metric_scorer.core.metrics import score_item
from metric_scorer.core.types import ItemKey
from tests.services.metric_scorer.test_boxes import _read_grey_png
from tests.shared_data import shared_path

SPEC = "box_iou+label_accuracy"

Box = tuple[float, float, float, float]


def _components(answer: str, reference: list[dict[str, Any]]) -> dict[str, float]:
    key = ItemKey("MedDetect-1", "MedDetect", SPEC, (json.dumps(reference, ensure_ascii=False),))
    return dict(
        score_objective(answer, key, plan(SPEC, (), judge_key_points=True).objective).components
    )


def _plain_iou(a: Box, b: Box) -> float:
    """IoU by hand, written apart from the code under test."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def _expected_box_score(gold: list[tuple[str, Box]], pred: list[tuple[str, Box]]) -> float:
    """Best one-to-one pairing of same-class boxes, by brute force within each class (the demo
    has at most two boxes of one class), summed IoU over the number of boxes."""
    by_class_gold: dict[str, list[Box]] = defaultdict(list)
    by_class_pred: dict[str, list[Box]] = defaultdict(list)
    for label, box in gold:
        by_class_gold[label].append(box)
    for label, box in pred:
        by_class_pred[label].append(box)
    total = 0.0
    for label, golds in by_class_gold.items():
        preds = by_class_pred.get(label, [])
        assert len(preds) == len(golds) <= 3
        total += max(
            sum(_plain_iou(p, g) for p, g in zip(order, golds, strict=True))
            for order in itertools.permutations(preds)
        )
    return total / max(len(gold), len(pred))


def _demo_lesions() -> dict[str, list[tuple[str, Box]]]:
    """Per SAM-Med2D slice, its organs with the tight box of each mask in the MedDetect frame
    ([0, 1000], continuous: pixel column x covers [x, x + 1))."""
    root: Path = shared_path("medbench-data", "sam-med2d-demo-masks")
    lesions: dict[str, list[tuple[str, Box]]] = defaultdict(list)
    for line in (root / "boxes_from_masks.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        mask = _read_grey_png(root / row["mask"]) > 0
        ys, xs = np.nonzero(mask)
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        assert [x1, y1, x2, y2] == row["bbox_xyxy"], row["mask"]
        sx, sy = 1000 / mask.shape[1], 1000 / mask.shape[0]
        box = (x1 * sx, y1 * sy, (x2 + 1) * sx, (y2 + 1) * sy)
        lesions[row["image"]].append((row["label"], box))
    return lesions


def _answer(lesions: list[tuple[str, Box]], seed: int) -> str:
    """The lesions as a model might lay them out: shuffled, keys swapped, spaced."""
    entries = [{"边界框": list(box), "类别": [f" {label} "]} for label, box in lesions]
    random.Random(seed).shuffle(entries)
    return "```json\n" + json.dumps(entries, ensure_ascii=False, indent=3) + "\n```"


SHIFTS: list[tuple[float, float]] = [(0, 0), (20, 0), (0, 20), (-20, 20), (35, -10), (7.5, 3.25)]


@pytest.mark.parametrize(("dx", "dy"), SHIFTS, ids=[f"dx{dx}_dy{dy}" for dx, dy in SHIFTS])
def test_shifted_demo_boxes_score_the_independent_iou(dx: float, dy: float) -> None:
    for image, gold in _demo_lesions().items():
        moved = [(label, (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy)) for label, b in gold]
        # Shifted boxes stay inside the frame, so clipping plays no part in the expectation.
        assert all(0 <= c <= 1000 for _, box in moved for c in box), image
        reference = [{"类别": [label], "边界框": list(box)} for label, box in gold]
        scores = _components(_answer(moved, seed=len(gold)), reference)
        assert scores["box_iou"] == pytest.approx(_expected_box_score(gold, moved), abs=1e-12)
        assert scores["label_accuracy"] == 1.0, image


def test_a_wrong_class_costs_its_box_and_its_label_share() -> None:
    image, gold = max(_demo_lesions().items(), key=lambda kv: len(kv[1]))
    moved = [(label, (b[0] + 20, b[1], b[2] + 20, b[3])) for label, b in gold]
    wrong = [("肝癌", moved[0][1]), *moved[1:]]
    reference = [{"类别": [label], "边界框": list(box)} for label, box in gold]
    scores = _components(_answer(wrong, seed=1), reference)
    n = len(gold)
    right_iou = sum(_plain_iou(p[1], g[1]) for p, g in zip(moved[1:], gold[1:], strict=True))
    assert scores["box_iou"] == pytest.approx(right_iou / n, abs=1e-12), image
    assert scores["label_accuracy"] == pytest.approx((n - 1) / n)


def test_a_box_shifted_by_20_scores_its_iou_and_a_full_label() -> None:
    # The case: a right box 20 units off was reported at half its IoU.
    gold = [{"类别": ["肺癌"], "边界框": [420, 380, 510, 460]}]
    answer = '[{"边界框": [440, 380, 530, 460], "类别": ["肺癌"]}]'
    scores = _components(answer, gold)
    assert scores == {"box_iou": pytest.approx(70 * 80 / (110 * 80)), "label_accuracy": 1.0}


BOX_REFERENCE = [
    {"类别": ["肝癌"], "边界框": [100, 200, 300, 400]},
    {"类别": ["肺癌"], "边界框": [500, 500, 600, 650]},
]

# (case id, answer, expected label_accuracy)
LABEL_CASES: list[tuple[str, str, float]] = [
    ("as_sealed", json.dumps(BOX_REFERENCE, ensure_ascii=False), 1.0),
    (
        "keys_reordered_lesions_swapped_floats_and_strings",
        '[{"边界框": [500.0, 500, 600, 650.0], "类别": ["肺癌"]},'
        ' {"边界框": ["100", "200", "300", "400"], "类别": "肝癌"}]',
        1.0,
    ),
    (
        "fenced_and_spaced_with_prose",
        '结果如下：\n```json\n[ { "类别" : [ "肝癌" ] , "边界框" : [ 100 , 200 , 300 , 400 ] } ,\n'
        '  { "类别" : [ "肺 癌" ] , "边界框" : [ 500 , 500 , 600 , 650 ] } ]\n```',
        1.0,
    ),
    (
        "right_classes_boxes_elsewhere",
        '[{"类别":["肺癌"],"边界框":[0,0,10,10]},{"类别":["肝癌"],"边界框":[900,900,990,990]}]',
        1.0,
    ),
    (
        "one_class_wrong",
        '[{"类别":["肝癌"],"边界框":[100,200,300,400]},'
        '{"类别":["胰腺癌"],"边界框":[500,500,600,650]}]',
        0.5,
    ),
    ("one_lesion_missed", '[{"类别":["肝癌"],"边界框":[100,200,300,400]}]', 0.5),
    (
        "extra_lesion",
        '[{"类别":["肝癌"],"边界框":[100,200,300,400]},'
        '{"类别":["肺癌"],"边界框":[500,500,600,650]},{"类别":["肺癌"],"边界框":[1,1,9,9]}]',
        2 / 3,
    ),
    ("declares_no_lesion", '[{"类别": ["无病变"], "边界框": []}]', 0.0),
    ("prose_only", "图像中可见肝癌与肺癌。", 0.0),
]


@pytest.mark.parametrize(
    ("answer", "expected"), [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES]
)
def test_box_label_accuracy_reads_classes_from_the_boxes(answer: str, expected: float) -> None:
    assert _components(answer, BOX_REFERENCE)["label_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "answer", ['[{"类别": ["无病变"], "边界框": []}]', '[{"边界框":[],"类别":["无病变"]}]', "[]"]
)
def test_a_clean_image_answered_clean_is_perfect(answer: str) -> None:
    assert _components(answer, [{"类别": ["无病变"], "边界框": []}]) == {
        "box_iou": 1.0,
        "label_accuracy": 1.0,
    }


def test_closed_label_items_keep_their_label_rule() -> None:
    key = ItemKey("MedClass-1", "MedClass", "label_accuracy", ("胰腺癌", "慢性胰腺炎"))
    assert score_item("胰腺癌", key).score == 1.0
    assert score_item("慢性胰腺炎", key).score == 0.0
