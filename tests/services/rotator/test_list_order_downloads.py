"""Downloads of label items (use cases over fakes): every label item's candidate list is shown
in an order of its own per tenant and item, its canary in one more order, stable across a
tenant's downloads, and a posted download is traced by those orders."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rotator.core.canaries import LIST, CanarySource, plain_lists
from rotator.core.leaktrace import LeakedLine
from tests.services.rotator.test_usecases import SECRET, batches, collect, stocked

INTENTS = ("病情咨询", "用药咨询", "预约挂号", "费用争议投诉")
N_ITEMS = 24


def rows() -> list[dict[str, Any]]:
    """MedIntentID-like items: the same intent list in every item, one dialogue each."""
    return [
        {
            "item_id": f"MedIntentID-{n}",
            "dataset": "MedIntentID",
            "answer_format": "label",
            "question": "## 任务：意图识别\n预定义的意图："
            + "、".join(INTENTS)
            + f"\n请问下面属于哪个意图？\n历史对话：患者：第{n}个问题。",
            "reference": [INTENTS[n % 4], *(x for x in INTENTS if x != INTENTS[n % 4])],
        }
        for n in range(N_ITEMS)
    ]


def listed(question: str) -> tuple[str, ...]:
    line = next(x for x in question.split("\n") if x.startswith("预定义的意图："))
    return tuple(line.removeprefix("预定义的意图：").split("、"))


async def test_every_label_item_shows_its_own_order_and_the_canary_one_more() -> None:
    bank = rows()
    rotator = await stocked(bank)
    await rotator.rotation.publish("p1", "agent", "upload")
    for sid, tenant in (("sub-a", "tenant-a"), ("sub-a2", "tenant-a"), ("sub-b", "tenant-b")):
        await rotator.serving.assign(sid, tenant, "agent", "upload")
    a, a2, b = [await collect(rotator, s) for s in ("sub-a", "sub-a2", "sub-b")]
    variant = rotator.assignments.stored_variants["sub-a"]
    (canary,) = variant.canaries
    assert canary.kind == LIST
    shown = {i.item_id: listed(i.question) for i in a}
    assert all(sorted(x) == sorted(INTENTS) for x in shown.values())
    assert INTENTS not in shown.values(), "no item in the bank's order, the canary neither"
    common, most = Counter(shown.values()).most_common(1)[0]
    assert most <= N_ITEMS // 3 and len(set(shown.values())) >= 8, "no order shared by all"
    # Only the list moved; the download's items are the pool's, none marked.
    questions = {r["item_id"]: r["question"] for r in bank}
    for item in a:
        rest = [x for x in item.question.split("\n") if not x.startswith("预定义的意图：")]
        assert rest == [
            x for x in questions[item.item_id].split("\n") if not x.startswith("预定义的意图：")
        ]
        assert not item.canary
    # The canary's order is neither the tenant's plain order for it nor the bank's.
    row = next(r for r in bank if r["item_id"] == canary.item_id)
    source = CanarySource(canary.item_id, 0, "MedIntentID", canary.item_id, "label_accuracy",
                          row["question"], reference=tuple(row["reference"]))  # fmt: skip
    ((start, end, plain),) = plain_lists(SECRET, "tenant-a", source)
    ((_, _, order),) = canary.lists
    assert order not in (plain, (0, 1, 2, 3))
    # Stable per tenant (a re-download is the same text and hash), other tenants other orders.
    assert [(i.question, i.prompt_hash) for i in a] == [(i.question, i.prompt_hash) for i in a2]
    assert sum(x.question != y.question for x, y in zip(a, b, strict=True)) >= N_ITEMS * 3 // 4
    # The scorers never see a label order as an option order: the key stays the pool's.
    assert not set(dict(variant.orders)) & set(questions)
    assert {item_id for item_id, _ in variant.lists} == set(questions)


async def test_a_posted_download_of_label_items_is_traced_by_their_orders() -> None:
    bank = rows()
    rotator = await stocked(bank)
    await rotator.rotation.publish("p1", "agent", "upload")
    for sid, tenant in (("sub-a", "tenant-a"), ("sub-b", "tenant-b"), ("sub-c", "tenant-c")):
        await rotator.serving.assign(sid, tenant, "agent", "upload")
    canaries = {c.item_id for c in rotator.assignments.stored_variants["sub-b"].canaries}
    leaked = [
        LeakedLine(i.item_id, i.question)
        for i in await collect(rotator, "sub-b")
        if i.item_id not in canaries
    ][:6]
    trace = await rotator.leaks.trace(batches(leaked))
    suspects = {s.submission_id: s for s in trace.suspects}
    top = suspects["sub-b"]
    assert (top.canary_hits, top.matched_items, top.checked_items) == (0, 6, 6)
    assert math.isclose(top.chance, (1 / 23) ** 6)
    others = [s for s in trace.suspects if s.submission_id != "sub-b"]
    assert all(s.matched_items < 6 and s.chance >= 1 / 23 for s in others)
    # (Another tenant's canary may show an item in this tenant's plain order, 1 time in 23:
    # a canary hit of chance 1/23, which `ranked` lists first; the chance tells them apart.)
    # The bank's own questions match no download's orders.
    bank_lines = [LeakedLine(r["item_id"], r["question"]) for r in bank]
    assert (await rotator.leaks.trace(batches(bank_lines))).suspects == ()
