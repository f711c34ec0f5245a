"""Canaries (pure): real pool items altered for a tenant, in place, with their own keys."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rotator.core.canaries import (
    DETAIL,
    ORDER,
    CanarySource,
    ages,
    alter_group,
    choose,
    fingerprint,
    may_alter,
    normalise,
    rank,
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
