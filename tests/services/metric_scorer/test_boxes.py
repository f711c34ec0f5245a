"""Tests for box and mask IoU, box matching, and the MedDetect box score."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metric_scorer.core.boxes import (
    METRICS,
    Detection,
    box_iou,
    detection_score,
    iou_matrix,
    mask_box,
    mask_iou,
    match_boxes,
    normalise_pixel_box,
    parse_detections,
)
from metric_scorer.core.types import ItemKey
from tests.shared_data import shared_path

# (case id, a, b, expected IoU)
IOU_CASES: list[tuple[str, list[float], list[float], float]] = [
    ("identical", [420, 380, 510, 460], [420, 380, 510, 460], 1.0),
    ("disjoint", [0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ("touching_edges", [0, 0, 10, 10], [10, 0, 20, 10], 0.0),
    ("half_shifted", [0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ("contained", [0, 0, 10, 10], [2, 2, 7, 7], 25 / 100),
    ("float_coordinates", [0.5, 0.5, 2.5, 2.5], [1.5, 1.5, 3.5, 3.5], 1 / 7),
    ("inverted_x", [510, 380, 420, 460], [420, 380, 510, 460], 0.0),
    ("inverted_both_vs_itself", [510, 460, 420, 380], [510, 460, 420, 380], 0.0),
    ("zero_width_vs_itself", [420, 380, 420, 460], [420, 380, 420, 460], 0.0),
    ("zero_width_inside_other", [5, 0, 5, 10], [0, 0, 10, 10], 0.0),
]


@pytest.mark.parametrize(
    ("a", "b", "expected"), [c[1:] for c in IOU_CASES], ids=[c[0] for c in IOU_CASES]
)
def test_box_iou(a: list[float], b: list[float], expected: float) -> None:
    assert box_iou(a, b) == pytest.approx(expected)
    assert iou_matrix([a], [b])[0, 0] == pytest.approx(expected)


coordinate = st.floats(0, 1000, allow_nan=False)
any_box = st.tuples(coordinate, coordinate, coordinate, coordinate)


@st.composite
def valid_boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    # At least half a unit wide and high: the prompt asks for integer corners, and slivers of
    # 1e-200 would underflow their area to 0.
    x1 = draw(st.floats(0, 990))
    y1 = draw(st.floats(0, 990))
    x2 = x1 + draw(st.floats(0.5, 1000 - x1))
    y2 = y1 + draw(st.floats(0.5, 1000 - y1))
    return x1, y1, x2, y2


@given(a=any_box, b=any_box)
def test_box_iou_symmetric_and_bounded(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    iou = box_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == box_iou(b, a)
    assert iou_matrix([a], [b])[0, 0] == iou


@given(box=valid_boxes())
def test_box_iou_of_a_valid_box_with_itself_is_one(box: tuple[float, ...]) -> None:
    assert box_iou(box, box) == 1.0


@given(pred=st.lists(any_box, max_size=5), gold=st.lists(any_box, max_size=5))
def test_iou_matrix_agrees_with_box_iou(
    pred: list[tuple[float, ...]], gold: list[tuple[float, ...]]
) -> None:
    matrix = iou_matrix(pred, gold)
    assert matrix.shape == (len(pred), len(gold))
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            assert matrix[i, j] == box_iou(p, g)


def test_match_boxes_maximises_total_not_greedy() -> None:
    # Taking predictions in order, pred 0 would grab gold 0 (IoU 0.6) and leave pred 1 the
    # poor gold 1 (0.19); the optimum pairs crosswise (0.48 + 0.9).
    gold = [[0, 0, 100, 100], [60, 0, 160, 100]]
    pred = [[25, 0, 125, 100], [0, 0, 90, 100]]
    pairs = match_boxes(pred, gold)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
    in_order_total = box_iou(pred[0], gold[0]) + box_iou(pred[1], gold[1])
    assert sum(iou for _, _, iou in pairs) > in_order_total
    for i, j, iou in pairs:
        assert iou == box_iou(pred[i], gold[j])


def test_match_boxes_rectangular_and_zero_overlap() -> None:
    gold = [[0, 0, 10, 10]]
    pred = [[500, 500, 600, 600], [1, 1, 10, 10], [0, 0, 5, 5]]
    assert match_boxes(pred, gold) == [(1, 0, pytest.approx(0.81))]
    assert match_boxes([[500, 500, 600, 600]], gold) == []
    assert match_boxes([], gold) == []
    assert match_boxes(pred, []) == []


@given(pred=st.lists(any_box, max_size=5), gold=st.lists(any_box, max_size=5))
def test_matching_is_invariant_under_swapping_pred_and_gold(
    pred: list[tuple[float, ...]], gold: list[tuple[float, ...]]
) -> None:
    forward = match_boxes(pred, gold)
    backward = match_boxes(gold, pred)
    assert sum(iou for *_, iou in forward) == pytest.approx(sum(iou for *_, iou in backward))
    for i, j, iou in forward:
        assert iou == box_iou(gold[j], pred[i])
    assert len({i for i, _, _ in forward}) == len(forward)
    assert len({j for _, j, _ in forward}) == len(forward)


# ---- MedDetect component -------------------------------------------------------------------


def _key(gold: list[dict[str, Any]]) -> ItemKey:
    return ItemKey(
        item_id="d1",
        dataset="MedDetect",
        metric="box_iou",
        reference=(json.dumps(gold, ensure_ascii=False),),
    )


LIVER = {"类别": ["肝癌"], "边界框": [600, 300, 700, 400]}
LIVER_2 = {"类别": ["肝癌"], "边界框": [300, 500, 360, 560]}
COLON = {"类别": ["结肠癌"], "边界框": [392, 520, 468, 595]}

# (case id, gold lesions, model answer, expected score)
DETECT_CASES: list[tuple[str, list[dict[str, Any]], str, float]] = [
    ("exact_single", [LIVER], '[{"类别": ["肝癌"],"边界框": [600,300,700,400]}]', 1.0),
    (
        "fenced_with_explanation_half_overlap",
        [LIVER],
        '根据CT影像，肝右叶可见低密度肿块：\n```json\n[{"类别": ["肝癌"], '
        '"边界框": [650, 300, 750, 400]}]\n```',
        50 / 150,
    ),
    (
        "no_lesion_declared_and_gold_empty",
        [],
        '[{"类别": ["无病变"], "边界框": []}]',
        1.0,
    ),
    ("empty_array_and_gold_empty", [], "[]", 1.0),
    ("no_lesion_declared_but_lesion_present", [LIVER], '[{"类别": ["无病变"],"边界框": []}]', 0.0),
    ("lesion_claimed_on_normal_scan", [], json.dumps([LIVER], ensure_ascii=False), 0.0),
    (
        "synonym_class_does_not_agree",
        [LIVER],
        '[{"类别": ["肝细胞癌"],"边界框": [600,300,700,400]}]',
        0.0,
    ),
    (
        "class_as_bare_string",
        [COLON],
        '[{"类别": "结肠癌", "边界框": [392, 520, 468, 595]}]',
        1.0,
    ),
    (
        "single_object_without_array",
        [COLON],
        '{"类别": ["结肠癌"], "边界框": [392, 520, 468, 595]}',
        1.0,
    ),
    (
        "one_of_two_found",
        [LIVER, LIVER_2],
        '[{"类别": ["肝癌"],"边界框": [300,500,360,560]}]',
        0.5,
    ),
    (
        "extra_false_positive",
        [LIVER],
        '[{"类别": ["肝癌"],"边界框": [600,300,700,400]},'
        '{"类别": ["肝癌"],"边界框": [10,10,50,50]}]',
        0.5,
    ),
    (
        "lesion_without_box_counts_against",
        [LIVER],
        '[{"类别": ["肝癌"],"边界框": [600,300,700,400]},{"类别": ["肝癌"],"边界框": []}]',
        0.5,
    ),
    (
        "coordinates_beyond_image_are_clipped",
        [{"类别": ["肺癌"], "边界框": [900, 900, 1000, 1000]}],
        '[{"类别": ["肺癌"],"边界框": [900,900,1100,1100]}]',
        1.0,
    ),
    (
        "string_coordinates",
        [LIVER],
        '[{"类别": ["肝癌"],"边界框": ["600","300","700","400"]}]',
        1.0,
    ),
    (
        "inverted_box_locates_nothing",
        [LIVER],
        '[{"类别": ["肝癌"],"边界框": [700,400,600,300]}]',
        0.0,
    ),
    (
        "echoed_examples_then_own_answer",
        [COLON],
        '示例：[{"类别": ["肺腺癌"],"边界框": [420,380,510,460]}]\n'
        '我的结果：[{"类别": ["结肠癌"],"边界框": [392,520,468,595]}]',
        1.0,
    ),
    ("prose_only", [], "未见明显病变。", 0.0),
    (
        "truncated_array",
        [LIVER],
        '[{"类别": ["肝癌"],"边界框": [600,300,700,400]},{"类别": ["肝癌"],"边界框": [3',
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [c[1:] for c in DETECT_CASES],
    ids=[c[0] for c in DETECT_CASES],
)
def test_box_iou_metric(gold: list[dict[str, Any]], answer: str, expected: float) -> None:
    result = METRICS["box_iou"](answer, _key(gold))
    assert result.score == pytest.approx(expected)
    assert result.metric == "box_iou"


def test_matching_is_class_aware() -> None:
    # Each prediction overlaps the wrong-class lesion most. Pairing on raw IoU would pair
    # each with its wrong-class neighbour and score 0; pairing on class-gated IoU credits the
    # small right-class overlaps.
    colon, liver = frozenset({"结肠癌"}), frozenset({"肝癌"})
    gold_boxes = [(0.0, 0.0, 100.0, 100.0), (100.0, 0.0, 200.0, 100.0)]
    pred_boxes = [(10.0, 0.0, 110.0, 100.0), (90.0, 0.0, 190.0, 100.0)]
    gold = [Detection(colon, gold_boxes[0]), Detection(liver, gold_boxes[1])]
    pred = [Detection(liver, pred_boxes[0]), Detection(colon, pred_boxes[1])]
    raw = match_boxes(pred_boxes, gold_boxes)
    assert [(i, j) for i, j, _ in raw] == [(0, 0), (1, 1)]
    small = box_iou(pred_boxes[0], gold_boxes[1])
    assert small == pytest.approx(10 / 190)
    assert detection_score(pred, gold) == pytest.approx(small)


def test_parse_detections_drops_declarations_only() -> None:
    found = parse_detections(
        [
            {"类别": ["无病变"], "边界框": []},
            {"类别": ["无病变"], "边界框": [0, 0, 0, 0]},
            {},
            {"类别": [" 肝癌 "], "边界框": [1, 2, 3, 4]},
            {"类别": ["肝癌"], "边界框": [1, 2, 3]},
            {"类别": ["肝癌"], "边界框": [10**400, 2, 3, 4]},
            "肝癌",
        ]
    )
    assert found == [
        Detection(frozenset({"肝癌"}), (1.0, 2.0, 3.0, 4.0)),
        Detection(frozenset({"肝癌"}), None),
        Detection(frozenset({"肝癌"}), None),
        Detection(frozenset(), None),
    ]


lesion = st.builds(
    lambda name, box: {"类别": [name], "边界框": list(box)},
    st.sampled_from(["肝癌", "肺癌", "结肠癌"]),
    valid_boxes(),
)


@given(a=st.lists(lesion, max_size=4), b=st.lists(lesion, max_size=4))
def test_detection_score_is_symmetric_and_bounded(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> None:
    ab = detection_score(parse_detections(a), parse_detections(b))
    assert 0.0 <= ab <= 1.0
    assert ab == pytest.approx(detection_score(parse_detections(b), parse_detections(a)))
    assert detection_score(parse_detections(a), parse_detections(a)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "reference",
    [(), ("not json",), ('{"类别": ["肝癌"]}',), ('[{"类别": ["肝癌"], "边界框": []}]',)],
)
def test_malformed_key_raises(reference: tuple[str, ...]) -> None:
    key = ItemKey(item_id="d9", dataset="MedDetect", metric="box_iou", reference=reference)
    with pytest.raises(ValueError, match="d9"):
        METRICS["box_iou"]("[]", key)


def test_pool_prompt_examples_score_against_themselves() -> None:
    """The v4 prompt's own examples, fed back as answers, parse and score 1 against
    themselves: our reading of the format is the prompt's."""
    path = shared_path("medbench-data", "medbench-v4-testpool", "vlm", "MedDetect.jsonl")
    question = json.loads(path.read_text(encoding="utf-8").splitlines()[0])["question"]
    examples = [line for line in question.splitlines() if line.startswith("[{")]
    assert len(examples) == 3
    for example in examples:
        gold = [
            lesion for lesion in json.loads(example) if lesion["类别"] != ["无病变"]
        ]  # the no-lesion example means an empty key
        assert METRICS["box_iou"](example, _key(gold)).score == 1.0


# ---- masks ---------------------------------------------------------------------------------


def test_mask_iou_basics() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    assert mask_iou(a, b) == 1.0
    a[0, :2] = True
    assert mask_iou(a, b) == 0.0
    b[0, 1:3] = True
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a.astype(np.uint8) * 255, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes"):
        mask_iou(a, np.zeros((4, 5), dtype=bool))


masks = hnp.arrays(np.bool_, (6, 7))


@given(a=masks, b=masks)
def test_mask_iou_symmetric_bounded_and_self_one(
    a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]
) -> None:
    assert 0.0 <= mask_iou(a, b) <= 1.0
    assert mask_iou(a, b) == mask_iou(b, a)
    assert mask_iou(a, a) == 1.0


def test_mask_box_and_normalised_frame() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    assert mask_box(mask) is None
    mask[2:5, 3:8] = True
    assert mask_box(mask) == (3, 2, 7, 4)
    assert normalise_pixel_box((0, 0, 19, 9), width=20, height=10) == (0, 0, 1000, 1000)
    assert normalise_pixel_box((3, 2, 7, 4), width=20, height=10) == (150, 200, 400, 500)


def _read_grey_png(path: Path) -> npt.NDArray[np.uint8]:
    """Decodes an 8-bit greyscale, non-interlaced PNG (the SAM-Med2D mask format), so the test
    needs no imaging library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 0, 0), path
        elif kind == b"IDAT":
            idat += body
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width + 1)
    out = np.zeros((height, width), np.int64)
    previous = np.zeros(width, np.int64)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:
            row = np.cumsum(line) % 256
        elif kind == 2:
            row = (line + previous) % 256
        else:  # average and Paeth depend on the pixel just decoded; none of the demo uses them
            row = np.zeros(width, np.int64)
            for x in range(width):
                left = row[x - 1] if x else 0
                up, up_left = previous[x], previous[x - 1] if x else 0
                if kind == 3:
                    predictor = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                row[x] = (line[x] + predictor) % 256
        out[y] = previous = row
    return out.astype(np.uint8)


def _demo_rows() -> list[dict[str, Any]]:
    root = shared_path("medbench-data", "sam-med2d-demo-masks")
    lines = (root / "boxes_from_masks.jsonl").read_text(encoding="utf-8").splitlines()
    return [{**json.loads(line), "root": root} for line in lines if line]


def test_boxes_from_demo_masks_match_shipped_boxes_exactly() -> None:
    # The shipped boxes are tight boxes with inclusive max indices; ours agree to the pixel,
    # and the pixel counts confirm the PNG decoding.
    rows = _demo_rows()
    assert len(rows) == 30
    for row in rows:
        mask = _read_grey_png(row["root"] / row["mask"]) > 0
        assert mask.shape == (row["height"], row["width"]), row["mask"]
        assert int(mask.sum()) == row["mask_pixels"], row["mask"]
        assert mask_box(mask) == tuple(row["bbox_xyxy"]), row["mask"]
        box = normalise_pixel_box(row["bbox_xyxy"], row["width"], row["height"])
        assert box_iou(box, box) == 1.0


def _shift_right(mask: npt.NDArray[np.bool_], pixels: int) -> npt.NDArray[np.bool_]:
    shifted = np.zeros_like(mask)
    shifted[:, pixels:] = mask[:, :-pixels]
    return shifted


def test_demo_mask_iou_with_itself_and_a_shifted_copy() -> None:
    for row in _demo_rows():
        mask = _read_grey_png(row["root"] / row["mask"]) > 0
        assert mask_iou(mask, mask) == 1.0
        shifted = _shift_right(mask, 3)
        assert int(shifted.sum()) == row["mask_pixels"]  # nothing fell off the edge
        iou = mask_iou(mask, shifted)
        assert 0.0 <= iou < 1.0, row["mask"]
        # The box of the shifted mask moves by the same 3 pixels, so its IoU is known exactly.
        x1, y1, x2, y2 = row["bbox_xyxy"]
        w, h = x2 - x1 + 1, y2 - y1 + 1
        moved = mask_box(shifted)
        assert moved == (x1 + 3, y1, x2 + 3, y2)
        expected = max(0, w - 3) * h / ((w + 3) * h)
        pixel_box = normalise_pixel_box(row["bbox_xyxy"], row["width"], row["height"])
        moved_box = normalise_pixel_box(moved, row["width"], row["height"])
        assert box_iou(pixel_box, moved_box) == pytest.approx(expected)


def test_vanishing_boxes_have_iou_zero_in_the_matrix_too() -> None:
    tiny = (0.0, 0.0, 4.858245641662691e-125, 1.3294407126546448e-261)
    assert box_iou(tiny, tiny) == 0.0
    assert iou_matrix([tiny], [tiny]).tolist() == [[0.0]]
