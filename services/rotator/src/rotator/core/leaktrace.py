"""Leak tracing (pure): per-download variants, canary items, and matching a leaked file.

Each download of a pool differs traceably: multiple-choice options come in an order derived
from a secret and the tenant (options.permutation_for), and a few canary items, fictitious
questions whose numbers are derived the same way, are mixed in. A leaked file is traced by
comparing its option orders with every download's, and by looking up its canaries.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from rotator.core.options import parse_options

CANARY_STEMS = (
    "患者，{sex}，{age}岁，发热{days}天，体温最高{temp}℃，血白细胞{wbc}×10^9/L。"
    "下列处理中最恰当的是",
    "患者，{sex}，{age}岁，活动后胸闷{days}天，血压{sbp}/{dbp}mmHg，心率{hr}次/分。首选的检查是",
    "患者，{sex}，{age}岁，口干多饮{days}天，空腹血糖{glu}mmol/L，糖化血红蛋白{a1c}%。"
    "下一步最合适的是",
)
CANARY_OPTIONS = (
    ("完善相关检查后对症治疗", "立即手术治疗", "仅随访观察，不做处理", "转上级医院进一步诊治"),
    ("心电图", "头颅CT", "腹部超声", "肺功能检查"),
    ("生活方式干预并启动降糖治疗", "立即静脉输注胰岛素", "不予处理", "口服抗生素"),
)


@dataclass(frozen=True)
class Canary:
    """A fictitious item unique to one download."""

    item_id: str
    dataset: str
    question: str
    fingerprint: str


def _numbers(secret: bytes, *parts: str) -> bytes:
    message = b"\x00".join(p.encode() for p in parts)
    return hmac.new(secret, message, hashlib.sha256).digest()


def normalise(text: str) -> str:
    """Canonical text for fingerprints: NFKC, no white space."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def fingerprint(text: str) -> str:
    """What identifies a canary wherever its text turns up."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def canaries(
    secret: bytes, tenant_id: str, submission_id: str, datasets: Sequence[str], count: int
) -> list[Canary]:
    """count canaries for one download, in the given choice datasets, in the house format."""
    out = []
    for k in range(count if datasets else 0):
        d = _numbers(secret, "canary", tenant_id, submission_id, str(k))
        template = d[0] % len(CANARY_STEMS)
        stem = CANARY_STEMS[template].format(
            sex="男" if d[1] & 1 else "女",
            age=18 + d[2] % 70,
            days=1 + d[3] % 28,
            temp=f"{38 + (d[4] % 25) / 10:.1f}",
            wbc=f"{4 + (d[5] % 160) / 10:.1f}",
            sbp=100 + d[6] % 80,
            dbp=60 + d[7] % 40,
            hr=50 + d[8] % 70,
            glu=f"{7 + (d[9] % 120) / 10:.1f}",
            a1c=f"{6 + (d[10] % 60) / 10:.1f}",
        )
        options = CANARY_OPTIONS[template]
        question = (
            "## 任务：请回答单项选择题，从问题选项中选出一个正确回答的序号，填写到<>中。\n\n"
            f"## 题目：{stem}\n"
            + "\n".join(f"{'ABCD'[i]}. {text}" for i, text in enumerate(options))
        )
        dataset = datasets[d[11] % len(datasets)]
        item_id = f"{dataset}-{100000 + int.from_bytes(d[12:16], 'big') % 900000}"
        out.append(Canary(item_id, dataset, question, fingerprint(question)))
    return out


def observed_order(canonical: Sequence[str], leaked_question: str) -> tuple[int, ...] | None:
    """Which canonical option stands at each position of a leaked question (None if the
    leaked options are not a reordering of the canonical ones)."""
    block = parse_options(leaked_question)
    if block is None or len(block.texts) != len(canonical):
        return None
    position = {normalise(text): i for i, text in enumerate(canonical)}
    try:
        order = tuple(position[normalise(text)] for text in block.texts)
    except KeyError:
        return None
    return order if len(set(order)) == len(order) else None


def chance(option_counts: Sequence[int]) -> float:
    """Probability that a download with independent random orders (never the identity)
    matches every listed item: the product of 1 / (n! - 1)."""
    p = 1.0
    for n in option_counts:
        p /= max(math.factorial(n) - 1, 1)
    return p
