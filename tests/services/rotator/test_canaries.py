"""Canaries (pure): real pool items altered for a tenant, in place, with their own keys."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from rotator.core.canaries import (
    DETAIL,
    LIST,
    ORDER,
    CanarySource,
    ages,
    alter_group,
    choose,
    enumerations,
    fingerprint,
    may_alter,
    names_candidates,
    normalise,
    plain_lists,
    rank,
    shown_lists,
)
from rotator.core.options import LETTERS, parse_options, permutation_for

SECRET = b"test-secret"
BANK = Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/sample_bank"


def bank_rows() -> list[dict[str, Any]]:
    with (BANK / "items.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def sources(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[CanarySource]]]:
    """dataset -> group -> members, as the download's use case hands them over."""
    out: dict[str, dict[str, list[CanarySource]]] = defaultdict(lambda: defaultdict(list))
    for ordinal, r in enumerate(rows):
        out[r["dataset"]][r.get("group_id", r["item_id"])].append(
            CanarySource(
                item_id=r["item_id"],
                ordinal=ordinal,
                dataset=r["dataset"],
                group_id=r.get("group_id", r["item_id"]),
                metric=r["answer_format"],
                question=r["question"],
                reference=tuple(r["reference"]),
            )
        )
    return out


def key_texts(question: str, letters: list[str] | tuple[str, ...]) -> set[str]:
    block = parse_options(question)
    assert block is not None
    return {block.texts[LETTERS.index(x)] for x in letters}


def shown_key(order: tuple[int, ...], reference: tuple[str, ...]) -> tuple[str, ...]:
    position = {original: shown for shown, original in enumerate(order)}
    return tuple(sorted(LETTERS[position[LETTERS.index(r)]] for r in reference))


# -- order canaries: every choice group of the sample bank, single and multiple choice -----


def test_every_choice_group_of_the_bank_becomes_a_canary_whose_key_follows_its_texts() -> None:
    groups = sources(bank_rows())
    formats = set()
    for dataset, by_group in groups.items():
        for members in by_group.values():
            made = alter_group(SECRET, "hospital-a", members)
            assert made is not None, (dataset, members[0].group_id)
            # In place: the same items, ids and ordinals (ids shaped like the dataset's because
            # they are its ids; a permutation group is altered whole, -pN siblings and all).
            assert [(c.item_id, c.ordinal, c.dataset) for c in made] == [
                (m.item_id, m.ordinal, m.dataset) for m in members
            ]
            shown_texts = set()
            for member, canary in zip(members, made, strict=True):
                formats.add(member.metric)
                assert canary.kind == ORDER
                question, _ = canary.shown(member.question)
                canonical, shown = parse_options(member.question), parse_options(question)
                assert canonical is not None and shown is not None
                assert shown.prefix == canonical.prefix and sorted(shown.texts) == sorted(
                    canonical.texts
                )
                key = shown_key(canary.order, member.reference)
                # An honest reader answers the same texts: the key follows them.
                assert key_texts(question, key) == key_texts(member.question, member.reference)
                # ... but not the original's letters, in the tenant's plain order nor the bank's.
                plain = permutation_for(SECRET, "hospital-a", member.item_id, len(canary.order))
                plain_key = shown_key(plain, member.reference)
                assert key != plain_key and key != tuple(sorted(member.reference))
                assert canary.originals == tuple(
                    dict.fromkeys((",".join(plain_key), ",".join(sorted(member.reference))))
                )
                assert ",".join(key) not in canary.originals
                if len(member.reference) == 1:
                    assert not set(key) & set(plain_key)
                # A leaked bank file never reads as a canary: no member's bank text.
                assert canary.fingerprint not in {fingerprint(m.question) for m in members}
                assert canary.fingerprint == fingerprint(question)
                assert canary.alter_key(member.reference[0]) == member.reference[0]
                shown_texts.add(tuple(normalise(t) for t in shown.texts))
                assert canary.chance == 1 / (math.factorial(len(canary.order)) - 1)
            assert len(shown_texts) == len(members), "siblings stay distinct"
    assert formats == {"choice_single", "choice_multi"}


def test_canaries_are_stable_per_tenant_and_differ_between_tenants() -> None:
    groups = sources(bank_rows())
    a = choose(SECRET, "hospital-a", groups, 1)
    assert a == choose(SECRET, "hospital-a", groups, 1), "a re-download shows the same"
    b = choose(SECRET, "hospital-b", groups, 1)
    assert {c.item_id for c in a} != {c.item_id for c in b}
    # Where both tenants drew the same group, an item may by chance show both the same order
    # (TraceLeak then weighs it with that chance); most do not.
    shared = {c.fingerprint for c in a} & {c.fingerprint for c in b}
    assert len(shared) <= len(a) // 4
    assert choose(b"another secret", "hospital-a", groups, 1) != a
    # One question group per dataset (a permutation group whole).
    assert {c.dataset for c in a} == set(groups)
    for dataset, by_group in groups.items():
        picked = {c.item_id for c in a if c.dataset == dataset}
        assert any(picked == {m.item_id for m in members} for members in by_group.values())
    assert choose(SECRET, "hospital-a", groups, 0) == []


def test_a_groups_rank_depends_on_the_tenant_and_the_group_only() -> None:
    # The same group ranks alike in any pool: a tenant's canary is its canary again wherever
    # the same candidates meet.
    assert rank(SECRET, "t", "MedExam-1") == rank(SECRET, "t", "MedExam-1")
    assert rank(SECRET, "t", "MedExam-1") != rank(SECRET, "u", "MedExam-1")
    groups = sources(bank_rows())
    smaller = {d: dict(list(g.items())[:2]) for d, g in groups.items()}
    full = {d: {g: groups[d][g] for g in smaller[d]} for d in smaller}
    assert choose(SECRET, "t", smaller, 1) == choose(SECRET, "t", full, 1)


def test_items_that_cannot_move_their_key_are_never_canaries() -> None:
    two = CanarySource(
        "X-1", 0, "X", "X-1", "choice_single", "题目\nA. 是\nB. 否", reference=("A",)
    )
    assert alter_group(SECRET, "t", [two]) is None
    everything = CanarySource(
        "X-2", 1, "X", "X-2", "choice_multi", "题目\nA. 甲\nB. 乙\nC. 丙", reference=("A", "B", "C")
    )
    assert alter_group(SECRET, "t", [everything]) is None
    no_options = CanarySource("X-3", 2, "X", "X-3", "choice_single", "没有选项", reference=("A",))
    assert alter_group(SECRET, "t", [no_options]) is None
    mixed = [
        CanarySource(
            "M-1", 0, "M", "M", "choice_single", "题\nA. 甲\nB. 乙\nC. 丙", reference=("A",)
        ),
        CanarySource("M-2", 1, "M", "M", "key_point_recall+judge", "45岁", key_points=("45岁",)),
    ]
    assert alter_group(SECRET, "t", mixed) is None


# -- detail canaries: free text (key points, judge), structured fields -----------------------

FREE_TEXT = CanarySource(
    item_id="MedRecordGen-12",
    ordinal=7,
    dataset="MedRecordGen",
    group_id="MedRecordGen-12",
    metric="key_point_recall+judge",
    question="医生：您好。\n患者：我今年45岁，头痛3天，血压150/95mmHg。\n请生成门诊病历。",
    messages=(("user", "患者45岁，头痛3天。"),),
    reference=("主诉：头痛3天。患者男，45岁。",),
    key_points=("男，45岁", "头痛3天", "血压150/95mmHg"),
    prompt="医生：您好。\n患者：我今年45岁，头痛3天，血压150/95mmHg。\n请生成门诊病历。",
)
FIELDS = CanarySource(
    item_id="SMDoc-3",
    ordinal=2,
    dataset="SMDoc",
    group_id="SMDoc-3",
    metric="field_accuracy",
    question="门诊病历：患者，女，62岁。主诉：咳嗽2周。\n需要提取的实体字段：\n- 年龄",
    reference=('{"年龄": "62", "主诉": "咳嗽2周"}',),
)


def test_a_text_items_age_moves_in_its_prompt_and_key_alike() -> None:
    [canary] = alter_group(SECRET, "hospital-a", [FREE_TEXT]) or []
    assert (canary.item_id, canary.ordinal, canary.kind, canary.originals, canary.age) == (
        "MedRecordGen-12", 7, DETAIL, ("45",), "45"
    )  # fmt: skip
    moved = canary.moved
    assert moved in {"46", "47", "48", "49"} and canary.moves_key  # within its half-decade
    question, messages = canary.shown(FREE_TEXT.question, FREE_TEXT.messages)
    assert question == FREE_TEXT.question.replace("45", moved)
    assert messages == (("user", f"患者{moved}岁，头痛3天。"),)
    assert canary.alter_key(FREE_TEXT.reference[0]) == f"主诉：头痛3天。患者男，{moved}岁。"
    key_points = tuple(canary.alter_key(k) for k in FREE_TEXT.key_points)
    assert key_points == (f"男，{moved}岁", "头痛3天", "血压150/95mmHg")
    assert canary.alter_prompt(FREE_TEXT.prompt) == question
    # Nothing else moved (150, 95 and 3 are not the age), and the original is gone.
    assert "45" not in question + "".join(key_points)
    assert canary.fingerprint == fingerprint(question) != fingerprint(FREE_TEXT.question)
    assert canary.chance == 1 / 4  # 46-49
    [again] = alter_group(SECRET, "hospital-a", [FREE_TEXT]) or []
    assert again == canary
    others = {(alter_group(SECRET, f"tenant-{k}", [FREE_TEXT]) or [canary])[0].moved
              for k in range(20)}  # fmt: skip
    assert len(others) >= 3, "tenants see different ages"


def test_a_structured_items_field_follows_the_moved_age() -> None:
    [canary] = alter_group(SECRET, "hospital-a", [FIELDS]) or []
    question, _ = canary.shown(FIELDS.question)
    moved = question.split("女，")[1][:2]
    assert moved in {"60", "61", "63", "64"} and moved == canary.moved
    assert canary.alter_key(FIELDS.reference[0]) == f'{{"年龄": "{moved}", "主诉": "咳嗽2周"}}'
    assert canary.originals == ("62",)


def test_an_age_the_key_does_not_quote_moves_in_the_prompt_only_and_traces() -> None:
    summary = CanarySource(
        "MedSummary-1", 3, "MedSummary", "MedSummary-1", "key_point_recall+judge",
        "请概括以下病历：患者男，62岁，反复胸痛3年。", reference=("急性心肌梗死",),
        key_points=("急性心肌梗死",), prompt="请概括以下病历：患者男，62岁，反复胸痛3年。",
    )  # fmt: skip
    assert alter_group(SECRET, "t", [summary], keyed_only=True) is None
    [canary] = alter_group(SECRET, "t", [summary]) or []
    question, _ = canary.shown(summary.question)
    assert (canary.kind, canary.moves_key, canary.originals) == (DETAIL, False, ())
    assert question != summary.question and canary.moved in question
    assert canary.alter_prompt(summary.prompt) == question  # the judge reads what was shown
    assert canary.alter_key("急性心肌梗死，62") == "急性心肌梗死，62"  # the key stays
    # A group whose key moves goes first, whatever the rank; else a tracing one.
    record = FREE_TEXT.__class__(**{**FREE_TEXT.__dict__, "dataset": "MedSummary"})
    made = choose(SECRET, "t", {"MedSummary": {"a": [summary], "b": [record]}}, 1)
    assert [c.item_id for c in made] == ["MedRecordGen-12"] and made[0].moves_key
    assert [c.item_id for c in choose(SECRET, "t", {"MedSummary": {"a": [summary]}}, 1)] == [
        "MedSummary-1"
    ]


def test_ages_that_are_not_safe_to_move_stay() -> None:
    def item(question: str, *key: str) -> CanarySource:
        return CanarySource("T-1", 0, "T", "T-1", "key_point_recall", question, key_points=key)

    assert ages(item("患者45岁，头痛。", "45岁")) == {"45": True}
    assert ages(item("患者45岁，头痛。", "头痛")) == {"45": False}, "the key does not quote it"
    assert ages(item("患者45岁，心率45次/分。", "45岁")) == {}, "45 is also a heart rate"
    assert ages(item("患者45岁，1979年出生。", "45岁")) == {}, "a birth date would disagree"
    assert ages(item("患者9岁，头痛。", "9岁")) == {} and ages(item("患儿15岁", "15岁")) == {}
    assert ages(item("问诊：头痛。", "45岁")) == {}, "not in the question"
    report = CanarySource(
        "V-1", 0, "MedVQA", "V-1", "judge", "62岁女性，结果如报告所示。", images=1
    )
    assert ages(report) == {}, "the report image may state the age"
    assert ages(CanarySource("V-2", 0, "MedVQA", "V-2", "judge", "62岁女性，胸片。", images=1)) == {
        "62": False
    }
    # A worked example is the same in every item of its dataset: its ages never move.
    example = "## 任务示例：患者31岁，发热。答：<B>\n\n## 题目：患者{}岁，头痛。"
    assert ages(item(example.format(45), "45岁", "31岁")) == {"45": True}
    assert ages(item(example.format(31), "31岁")) == {}, "the example's age too"
    assert ages(item("格式示例：患者80岁，死亡。\n## 问题\n患者56岁。", "56岁")) == {"56": True}
    assert may_alter("key_point_recall+judge", ()) and may_alter("field_accuracy", ("{}",))
    assert may_alter("choice_single", ("A",)) and not may_alter("choice_single", ())


# -- list canaries: labels, free text without an age, two-option items -----------------------

INTENTS = ("病情咨询", "用药咨询", "预约挂号", "费用争议投诉")
LABEL = CanarySource(
    item_id="MedIntentID-7",
    ordinal=3,
    dataset="MedIntentID",
    group_id="MedIntentID-7",
    metric="label_accuracy",
    question="预定义的意图：" + "，".join(INTENTS) + "\n请问下面属于哪个意图？\n患者：我想挂号。",
    reference=("预约挂号", *(i for i in INTENTS if i != "预约挂号")),
)


def test_a_label_items_candidates_are_reordered_and_its_key_stays() -> None:
    made = alter_group(SECRET, "hospital-a", [LABEL])
    assert made is not None
    (canary,) = made
    shown, _ = canary.shown(LABEL.question)
    assert canary.kind == LIST and canary.originals == ()  # a label's text is its key
    listed = shown.split("\n")[0].removeprefix("预定义的意图：").split("，")
    assert sorted(listed) == sorted(INTENTS) and tuple(listed) != INTENTS
    assert shown.split("\n")[1:] == LABEL.question.split("\n")[1:]
    assert canary.fingerprint == fingerprint(shown) != fingerprint(LABEL.question)
    assert math.isclose(canary.chance, 1 / (math.factorial(4) - 1))
    assert alter_group(SECRET, "hospital-a", [LABEL]) == made  # stable per tenant
    others = {alter_group(SECRET, f"t{n}", [LABEL])[0].fingerprint for n in range(40)}  # type: ignore[index]
    assert len(others) > 10 and fingerprint(LABEL.question) not in others


def test_a_free_text_items_own_enumeration_is_reordered_and_keyed_canaries_come_first() -> None:
    text = CanarySource(
        "MedVQA-1",
        0,
        "MedVQA",
        "MedVQA-1",
        "key_point_recall+judge",
        "请描述图像表现。\n可见征象：磨玻璃影、实变影、胸腔积液\n请给出诊断。",
        key_points=("肺炎",),
    )
    (canary,) = alter_group(SECRET, "t", [text]) or []
    assert canary.kind == LIST and math.isclose(canary.chance, 1 / 5)
    shown = canary.shown(text.question)[0]
    assert sorted(shown.split("\n")[1].split("：")[1].split("、")) == [
        "实变影",
        "磨玻璃影",
        "胸腔积液",
    ]
    assert alter_group(SECRET, "t", [text], keyed_only=True) is None
    aged = replace(
        text,
        item_id="MedVQA-2",
        group_id="MedVQA-2",
        question="患者45岁。" + text.question,
        key_points=("45岁",),
    )
    picked = choose(SECRET, "t", {"MedVQA": {"MedVQA-1": [text], "MedVQA-2": [aged]}}, 1)
    assert [c.kind for c in picked] == [DETAIL]


def test_enumerations_that_carry_order_or_meaning_stay() -> None:
    def found(question: str) -> list[tuple[str, ...]]:
        return [s.entries for s in enumerations(replace(LABEL, question=question, reference=()))]

    assert found("症状：头痛、发热") == [("头痛", "发热")]
    assert found("主诉：突发胸痛2小时，伴大汗、恶心。") == []  # not a whole clause
    assert found("步骤：首先洗手、然后消毒") == []  # a sequence
    assert found("病史：高血压、糖尿病等") == []  # "等" binds to the last entry
    assert found("剂量：1片、2片") == []  # numbers
    assert found("## 任务示例：头痛、发热\n\n症状：咳嗽、咳痰") == [("咳嗽", "咳痰")]
    assert found("症状：头痛、头痛") == []  # nothing to reorder


def test_a_two_option_item_keeps_its_plain_order_and_reorders_its_stem() -> None:
    two = CanarySource(
        "Y-1",
        0,
        "Y",
        "Y-1",
        "choice_single",
        "已知病史：高血压、糖尿病、冠心病\n是否需要调整用药？\nA. 是\nB. 否",
        reference=("A",),
    )
    (canary,) = alter_group(SECRET, "t", [two]) or []
    assert canary.kind == LIST and canary.order == permutation_for(SECRET, "t", "Y-1", 2)
    shown = canary.shown(two.question)[0]
    assert shown.endswith("A. 否\nB. 是") and not shown.startswith(
        "已知病史：高血压、糖尿病、冠心病"
    )


def intent(n: int, tenant_list: str = "、".join(INTENTS)) -> CanarySource:
    """One of a dataset's label items that all list the same intents (MedIntentID-like)."""
    return replace(
        LABEL,
        item_id=f"I-{n}",
        ordinal=n,
        group_id=f"I-{n}",
        question=f"预定义的意图：{tenant_list}\n请问下面属于哪个意图？\n患者：第{n}句话。",
        reference=(INTENTS[n % 4], *(x for x in INTENTS if x != INTENTS[n % 4])),
    )


def intents_shown(question: str) -> tuple[str, ...]:
    return tuple(question.split("\n")[0].removeprefix("预定义的意图：").split("、"))


def test_a_label_items_candidates_have_an_order_per_tenant_and_item_never_the_banks() -> None:
    items = [intent(n) for n in range(40)]
    plain = {
        t: [shown_lists(i.question, plain_lists(SECRET, t, i)) for i in items] for t in ("a", "b")
    }
    for t, shown in plain.items():
        listed = [intents_shown(q) for q in shown]
        assert all(sorted(x) == sorted(INTENTS) for x in listed)
        assert INTENTS not in listed, "never the bank's order"
        assert len(set(listed)) >= 12, f"{t}: not the same order for every item"
        # Only the list moves: the rest of the question is the bank's.
        assert [q.split("\n", 1)[1] for q in shown] == [i.question.split("\n", 1)[1] for i in items]
    assert plain["a"] == [shown_lists(i.question, plain_lists(SECRET, "a", i)) for i in items], (
        "stable per tenant"
    )
    differ = sum(a != b for a, b in zip(plain["a"], plain["b"], strict=True))
    assert differ >= 30, "another tenant sees other orders"
    assert plain_lists(b"another secret", "a", items[0]) != plain_lists(SECRET, "a", items[0]) or (
        plain_lists(b"another secret", "a", items[1]) != plain_lists(SECRET, "a", items[1])
    )


def test_only_a_key_naming_all_candidates_orders_them_and_two_names_stay_as_listed() -> None:
    item = intent(1)
    assert plain_lists(SECRET, "a", item)
    # A label set's key names the gold labels only: reordering them would single them out.
    gold = replace(item, metric="label_set_accuracy", reference=INTENTS[:3])
    assert plain_lists(SECRET, "a", gold) == () and not any(
        s.candidates for s in enumerations(gold)
    )
    sub = replace(item, reference=INTENTS[:3])  # three names inside a list of four
    assert plain_lists(SECRET, "a", sub) == ()
    # Two names have one other order, every tenant's: shown as the bank lists them.
    two = replace(item, question="候选诊断：正常、肺炎\n请判断。", reference=("肺炎", "正常"))
    assert plain_lists(SECRET, "a", two) == ()
    assert [s.per_item for s in enumerations(two)] == [False]
    assert names_candidates("label_accuracy+key_point_recall+judge")
    assert not names_candidates("label_set_accuracy")


def test_a_list_canary_differs_from_its_tenants_plain_order_and_from_the_banks() -> None:
    for n in range(60):
        item, tenant = intent(n), f"tenant-{n}"
        (canary,) = alter_group(SECRET, tenant, [item]) or []
        ((start, end, plain),) = plain_lists(SECRET, tenant, item)
        ((c_start, c_end, order),) = canary.lists
        assert (c_start, c_end) == (start, end)
        assert order != plain and order != (0, 1, 2, 3), n
        shown = canary.shown(item.question)[0]
        assert canary.fingerprint == fingerprint(shown)
        assert shown != shown_lists(item.question, plain_lists(SECRET, tenant, item))
        # Any download shows one of the 23 orders but the bank's, whoever the tenant.
        assert math.isclose(canary.chance, 1 / 23)
        assert canary.originals == () and canary.alter_key(item.reference[0]) == item.reference[0]


def test_a_detail_canary_of_a_label_item_shows_its_candidates_in_the_plain_order() -> None:
    outcomes = ("治愈", "好转", "未愈", "死亡")
    item = CanarySource(
        "MedOutcome-1", 0, "MedOutcome", "MedOutcome-1", "label_accuracy+key_point_recall+judge",
        "患者男，62岁，肺炎住院。\n可选结局：治愈、好转、未愈、死亡\n请预测结局。",
        reference=("好转", "治愈", "未愈", "死亡"), prompt="患者男，62岁，肺炎住院。",
    )  # fmt: skip
    (canary,) = alter_group(SECRET, "t", [item]) or []
    assert canary.kind == DETAIL and canary.lists == plain_lists(SECRET, "t", item)
    shown = canary.shown(item.question)[0]
    listed = tuple(shown.split("\n")[1].removeprefix("可选结局：").split("、"))
    assert sorted(listed) == sorted(outcomes) and listed != outcomes
    assert canary.moved in shown and "62" not in shown
    assert canary.fingerprint == fingerprint(shown)


def test_a_list_canary_never_reorders_a_list_every_download_shows_as_the_bank_does() -> None:
    two = ("正常", "肺炎")
    shared = {
        f"C-{n}": [
            replace(
                LABEL,
                item_id=f"C-{n}",
                group_id=f"C-{n}",
                reference=two,
                question=f"第{n}例：请判断诊断。候选诊断：正常、肺炎",
            )  # fmt: skip
        ]
        for n in range(3)
    }
    # Two-name candidate lists (and whole-clause lists) shared by the dataset's items: none of
    # them ever moves, so such a dataset has no list canary ...
    for tenant in ("a", "b", "c", "d"):
        assert choose(SECRET, tenant, {"I": shared}, 1) == [], tenant
    # ... unless an item has an enumeration of its own, reordered alone.
    own = replace(
        shared["C-0"][0], item_id="C-9", group_id="C-9",
        question="已知病史：高血压、糖尿病\n" + shared["C-0"][0].question,
    )  # fmt: skip
    for tenant in ("a", "b", "c", "d"):
        picked = choose(SECRET, tenant, {"I": shared | {"C-9": [own]}}, 1)
        assert [c.item_id for c in picked] == ["C-9"], tenant
        assert picked[0].lists == ((5, 12, (1, 0)),)
        assert picked[0].chance == 1.0  # the bank's order is its only other one
    # A shared list of three names or more is shown per item: any of its items may be the
    # canary, which shows the list in one more order of its own.
    intents = {f"I-{n}": [intent(n)] for n in range(6)}
    picked = [c for t in "abcdefgh" for c in choose(SECRET, t, {"I": intents}, 1)]
    assert len({c.item_id for c in picked}) >= 3
    assert all(c.kind == LIST and c.lists[0][2] != (0, 1, 2, 3) for c in picked)


def test_within_one_download_canaries_and_plain_items_show_alike_orders() -> None:
    """Items of one dataset all list the same candidates: whichever is the canary, its order is
    one more of the per-item orders (not the bank's, nor an odd one out), so an adversary who
    bets on the item whose order is rarest in the download, or on one never in the bank's
    order, does no better than a blind guess."""
    n_items, tenants = 30, 300
    items = {f"I-{n}": [intent(n)] for n in range(n_items)}
    found = 0
    for t in range(tenants):
        tenant = f"tenant-{t}"
        (canary,) = choose(SECRET, tenant, {"I": items}, 1)
        shown = {}
        for group_id, (item,) in items.items():
            if group_id == canary.item_id:
                shown[group_id] = intents_shown(canary.shown(item.question)[0])
            else:
                question = shown_lists(item.question, plain_lists(SECRET, tenant, item))
                shown[group_id] = intents_shown(question)
        assert INTENTS not in shown.values(), "no item shows the bank's order"
        counts = {order: list(shown.values()).count(order) for order in shown.values()}
        rarest = min(shown, key=lambda g: (counts[shown[g]], rank(SECRET, "adversary", g)))
        found += rarest == canary.item_id
        # A re-download shows the same: nothing differs between two downloads of the tenant.
        (again,) = choose(SECRET, tenant, {"I": items}, 1)
        assert again == canary
    # A blind guess finds the canary 1 time in 30: 10 of 300; the old shared-list canary (the
    # one item not in the dataset's common order) was found every time.
    print(f"rarest-order bet found the canary in {found} of {tenants} downloads")
    assert found <= 3 * tenants // n_items, found
