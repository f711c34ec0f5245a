"""Audit of every metric spec the registry gives an item: a perfect answer, in any layout the
prompt allows (keys reordered, white space, 1 vs 1.0, collection elements reordered), scores
1.0 on every component the metric scorer computes."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from metric_scorer.core.components import component_name, plan, score_objective
from metric_scorer.core.types import ItemKey
from tests.shared_data import REPO, shared_path

REGISTRY = REPO / "services/rotator/src/rotator/registry/medbench_v4.json"
SAMPLE_BANK = REPO / "services/rotator/src/rotator/sample_bank/items.jsonl"


def _item_specs() -> dict[str, str]:
    """Item-level metric spec -> one dataset (or part) using it; a split dataset's items carry
    their part's spec, not the union the dataset lists."""
    registry = json.loads(REGISTRY.read_text(encoding="utf-8"))
    specs: dict[str, str] = {}
    for dataset in registry["datasets"]:
        for unit in dataset.get("parts") or [dataset]:
            specs.setdefault(unit["metric"], unit["name"])
    return specs


OBJECTIVE_SPECS = {
    spec: name
    for spec, name in _item_specs().items()
    if plan(spec, ("point",), judge_key_points=False).objective
}


@dataclass(frozen=True)
class Reference:
    """One sealed key and the perfect answers in the layouts its prompt allows."""

    spec: str
    reference: tuple[str, ...]
    answers: tuple[str, ...]
    key_points: tuple[str, ...] = ()


def _json(value: Any, **kw: Any) -> str:
    return json.dumps(value, ensure_ascii=False, **kw)


def _choice_answers(letters: list[str]) -> tuple[str, ...]:
    rev = letters[::-1]
    full = "".join(chr(ord(c) + 0xFEE0) for c in rev)
    return (
        f"<{', '.join(letters)}>",
        f"< {' , '.join(rev)} >",
        "".join(rev),
        f"<{full}>",
        f"答案：{'、'.join(rev)}",
        f"<{'，'.join(rev)}>",
        f"【{','.join(rev)}】",
    )


def _sample_bank_references() -> Iterator[Reference]:
    for line in SAMPLE_BANK.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        fmt, ref = item["answer_format"], item["reference"]
        yield Reference(fmt, tuple(ref), _choice_answers(ref))


def _fields_reference(ref: dict[str, Any], reordered: dict[str, Any]) -> Reference:
    return Reference(
        "field_accuracy",
        (_json(ref),),
        (
            _json(ref),
            _json(reordered),
            "```json\n" + _json(reordered, indent=4) + "\n```",
            _json(reordered, separators=(" ,  ", " :  ")),
        ),
    )


_BOXES: list[dict[str, Any]] = [
    {"类别": ["肝癌"], "边界框": [100, 200, 300, 400]},
    {"类别": ["肺癌"], "边界框": [500, 500, 600, 650]},
]
_OUTCOME_REASON = "术后恢复良好，病理提示良性病变"
_REPORT_QC = {"多字或少字": "描述：建议'构'替换为'结构'", "方位错误": "诊断：左侧改为右侧"}

HAND_WRITTEN: list[Reference] = [
    Reference(
        "department_set_accuracy",
        ("心血管内科", "神经内科", "急诊科"),
        (
            "心血管内科、神经内科、急诊科",
            "急诊科、神经内科、心血管内科",
            "急诊科，神经内科，心血管内科",
            " 急诊科 / 神经内科 / 心血管内科 ",
            "急诊科\n神经内科\n心血管内科",
            "急诊科, 神经内科, 心血管内科",
        ),
    ),
    Reference(
        "label_accuracy",
        ("胰腺癌", "胰腺囊性肿瘤", "慢性胰腺炎"),
        ("胰腺癌", " 胰腺癌 \n", "胰腺癌。", "诊断：胰腺癌", '{"诊断": "胰腺癌"}', "**胰腺癌**"),
    ),
    Reference(
        "label_accuracy",
        ("费用争议投诉", "诊疗质量投诉", "服务态度投诉", "自费费用查询"),
        ("费用争议投诉", "意图：费用争议投诉", " 费用争议投诉 "),
    ),
    Reference(
        "label_set_accuracy",
        ("体位不正|偏中心|肺尖未包全",),
        (
            "体位不正|偏中心|肺尖未包全",
            "肺尖未包全|偏中心|体位不正",
            " 偏中心 | 体位不正 | 肺尖未包全 ",
            "偏中心｜肺尖未包全｜体位不正",
        ),
    ),
    Reference("label_set_accuracy", ("无问题",), ("无问题", " 无问题 ", "无问题。")),
    _fields_reference(
        {"总费用": 4305, "统筹支付": 2758.13, "个人自付": "1546.87元", "起付线": 180.0},
        {"起付线": "180", "个人自付": 1546.87, "统筹支付": "2,758.13", "总费用": 4305.0},
    ),
    _fields_reference(
        {
            "主诉": "腰背部不适伴右下肢麻木1年，加重伴腰痛1月",
            "体温(℃)": "37",
            "脉搏(次/分)": 80,
            "血压(mmHg)": "120/80",
            "初步诊断": ["T12椎体新鲜压缩性骨折", "L4/5腰椎间盘突出症"],
            "查体": {"腰背部压痛": "+", "直腿抬高(度)": [40, 80]},
        },
        {
            "查体": {"直腿抬高(度)": [40.0, "80"], "腰背部压痛": "+"},
            "初步诊断": ["L4/5腰椎间盘突出症", "T12椎体新鲜压缩性骨折"],
            "血压(mmHg)": "120/80",
            "脉搏(次/分)": "80",
            "体温(℃)": 37.0,
            "主诉": " 腰背部不适伴右下肢麻木1年，加重伴腰痛1月 ",
        },
    ),
    Reference(
        "edit_similarity",
        (
            _json(
                {
                    "影像描述": "肝脏形态大小正常，肝内未见异常密度影。",
                    "影像诊断": "肝脏CT平扫未见异常",
                }
            ),
        ),
        (
            _json(
                {
                    "影像诊断": "肝脏CT平扫未见异常",
                    "影像描述": "肝脏形态大小正常，肝内未见异常密度影。",
                }
            ),
            '```json{"影像诊断": " 肝脏 CT 平扫未见异常 ",\n'
            ' "影像描述": "肝脏形态大小正常，肝内未见异常密度影。"}```',
        ),
    ),
    Reference(
        "micro_f1+key_point_recall+judge",
        (_json(_REPORT_QC),),
        (
            _json(_REPORT_QC),
            _json(dict(reversed(_REPORT_QC.items())), indent=2),
            _json([{"修改建议": v, "错误类型": k} for k, v in reversed(_REPORT_QC.items())]),
            "```json\n"
            + _json(dict(reversed(_REPORT_QC.items())), separators=(" , ", " : "))
            + "```",
        ),
        key_points=tuple(_REPORT_QC.values()),
    ),
    Reference("micro_f1+key_point_recall+judge", ("{}",), ("{}", "[]", "```json\n{ }\n```")),
    Reference(
        "key_point_recall+judge",
        ("诊断：社区获得性肺炎。处理：头孢曲松抗感染，复查胸部CT。",),
        (
            "诊断：社区获得性肺炎。处理：头孢曲松抗感染，复查胸部CT。",
            "1. 复查胸部 CT\n2. 头孢曲松 抗感染\n3. 诊断为社区获得性肺炎",
            "诊断 ： 社区获得性肺炎 ； 头孢曲松抗感染 ， 复查胸部ct",
        ),
        key_points=("社区获得性肺炎", "头孢曲松抗感染", "复查胸部CT"),
    ),
    Reference(
        "label_accuracy+key_point_recall+judge",
        ("好转", "治愈", "未愈", "死亡"),
        (
            _json({"预测结局": "好转", "理由": _OUTCOME_REASON}),
            _json({"理由": _OUTCOME_REASON, "预测结局": "好转"}, indent=2),
            '{ "理由" : "术后 恢复良好 , 病理提示良性病变" ,\n  "预测结局" : "好转" }',
        ),
        key_points=("术后恢复良好", "病理提示良性病变"),
    ),
    Reference(
        "box_iou+label_accuracy",
        (_json(_BOXES),),
        (
            _json(_BOXES),
            _json(
                [
                    {"边界框": [float(c) for c in b["边界框"]], "类别": b["类别"]}
                    for b in _BOXES[::-1]
                ]
            ),
            "```json\n"
            + _json([{"边界框": b["边界框"], "类别": b["类别"][0]} for b in _BOXES], indent=1)
            + "\n```",
            _json([{"类别": b["类别"], "边界框": [str(c) for c in b["边界框"]]} for b in _BOXES]),
        ),
    ),
    Reference(
        "box_iou+label_accuracy",
        (_json([{"类别": ["无病变"], "边界框": []}]),),
        (
            '[{"类别": ["无病变"], "边界框": []}]',
            '[ { "边界框" : [ ] , "类别" : [ "无病变" ] } ]',
            "[]",
        ),
    ),
]


def _cmb_clin_references() -> Iterator[Reference]:
    """Key points from CMB-Clin reference answers (one per clause); the perfect answer states
    them all, in reverse order, in another list layout."""
    cases = json.loads(shared_path("medbench-data", "cmb-clin", "CMB-Clin.json").read_text("utf-8"))
    for case in cases[:10]:
        pairs = case["QA_pairs"]
        for pair in (ast.literal_eval(pairs) if isinstance(pairs, str) else pairs)[:2]:
            points = tuple(
                p for raw in re.split(r"[；;。\n]", pair["answer"]) if len(p := raw.strip()) >= 4
            )
            if not points:
                continue
            yield Reference(
                "key_point_recall+judge",
                (pair["answer"],),
                (
                    "\n".join(points),
                    "\n- " + "；\n- ".join(points[::-1]) + "。",
                    "  ".join(points[::-1]),
                ),
                key_points=points,
            )


SOURCES: list[tuple[str, Callable[[], Iterator[Reference]]]] = [
    ("sample_bank", _sample_bank_references),
    ("hand_written", lambda: iter(HAND_WRITTEN)),
    ("cmb_clin", _cmb_clin_references),
]


@pytest.mark.parametrize("spec", sorted(OBJECTIVE_SPECS))
def test_every_objective_spec_of_the_registry_has_a_reference_here(spec: str) -> None:
    specs = {r.spec for r in (*HAND_WRITTEN, *_sample_bank_references())}
    assert spec in specs, f"no reference for {spec} (used by {OBJECTIVE_SPECS[spec]})"


@pytest.mark.parametrize("source", [s[1] for s in SOURCES], ids=[s[0] for s in SOURCES])
def test_a_perfect_answer_scores_one_in_every_layout(
    source: Callable[[], Iterator[Reference]],
) -> None:
    checked = 0
    for ref in source():
        assert ref.spec in OBJECTIVE_SPECS, f"{ref.spec} is no item spec of the registry"
        # Key points matched lexically (the fallback with no judge): a perfect answer in any
        # layout must still cover them all.
        objective = plan(ref.spec, ref.key_points, judge_key_points=False).objective
        key = ItemKey("item-1", OBJECTIVE_SPECS[ref.spec], ref.spec, ref.reference, ref.key_points)
        for answer in ref.answers:
            scored = score_objective(answer, key, objective).components
            assert [name for name, _ in scored] == [component_name(o) for o in objective]
            assert all(score == 1.0 for _, score in scored), (ref.spec, answer, scored)
            checked += 1
    assert checked
