"""A scripted judge model: reads the judge prompt the way a judge would and answers in JSON.

It scores the fenced answer by the share of key points it mentions (0-10) and reports those as
key_points_covered (the item's judged key-point recall), and it is gullible
on purpose: an answer demanding full marks gets them, so the platform's own defence is what
keeps such answers down. Marker words script its failures:

- ``GARBLE-ONCE``: the first reply is not JSON; the repair turn gets a proper verdict.
- ``GARBLE-ALWAYS``: no reply is ever JSON.
- ``争议`` ("disputed"): a harsh judge (``harsh=True``) takes 6 points off, so a panel of a fair
  and a harsh judge disagrees.

With ``criteria=True`` it also scores every criterion the rubric lists in the system message
(``criteria``, by name), each the overall score; by default it ignores the criteria, like a judge
that does not follow that part of the prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

ANSWER = re.compile(r"<<<ANSWER ([0-9a-f]+)>>>\n(.*?)\n<<<END ANSWER \1>>>", re.S)
POINTS = re.compile(r"【得分要点】\n(.*?)\n\n", re.S)
CRITERIA = re.compile(r"## 评分维度（括号内为权重）\n(.*?)\n\n", re.S)


def fenced_answer(prompt: str) -> str:
    found = ANSWER.search(prompt)
    assert found, "the judge prompt carries the answer between nonce delimiters"
    return found.group(2).replace("\u2060", "")


def key_points(prompt: str) -> list[str]:
    found = POINTS.search(prompt)
    if not found:
        return []
    return [
        line.split(". ", 1)[1] for line in found.group(1).splitlines() if re.match(r"^\d+\. ", line)
    ]


def fair_score(prompt: str) -> int:
    answer, points = fenced_answer(prompt), key_points(prompt)
    if not points:
        return 5
    return round(10 * sum(1 for p in points if p in answer) / len(points))


def covered(prompt: str) -> list[int]:
    """The key points this judge finds covered (its own rule: the point's text appears in the
    answer), numbered from 1: the item's key-point recall, as the judge decides it."""
    answer = fenced_answer(prompt)
    return [n for n, p in enumerate(key_points(prompt), start=1) if p in answer]


def criterion_names(system: str) -> list[str]:
    """The rubric's criterion names, as the system message lists them ("1. 名称（30%）：")."""
    found = CRITERIA.search(system)
    assert found, "the judge prompt lists the rubric's criteria"
    return [re.sub(r"^\d+\. ", "", line).split("（", 1)[0] for line in found.group(1).splitlines()]


def judge(harsh: bool = False, criteria: bool = False) -> Any:
    """A Script.reply function."""

    def reply(messages: list[dict[str, Any]]) -> str:
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        answer = fenced_answer(prompt)
        repairing = len(messages) > 2
        if "GARBLE-ALWAYS" in answer or ("GARBLE-ONCE" in answer and not repairing):
            return "这个回答总体不错，我给它打高分。"
        score = 10 if "给满分" in answer else fair_score(prompt)
        if harsh and "争议" in answer:
            score = max(0, score - 6)
        verdict: dict[str, Any] = {
            "score": score,
            "key_points_covered": covered(prompt),
            "rationale": "按要点覆盖评分",
        }
        if criteria:
            system = next(m["content"] for m in messages if m["role"] == "system")
            verdict["criteria"] = dict.fromkeys(criterion_names(system), score)
        return f"评分如下：\n```json\n{json.dumps(verdict, ensure_ascii=False)}\n```"

    return reply
