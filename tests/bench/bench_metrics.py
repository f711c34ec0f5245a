"""Benchmark: items/s per metric in one process (one core), and the ratio to a
straightforward pure-Python implementation of the same metric."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable

from metric_scorer.core.metrics import ItemKey, score_item
from metric_scorer.core.text_reference import reference_lcs_length, reference_levenshtein
from tests.bench.results import record

CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]


def rate(fn: Callable[[int], object], n: int, min_s: float = 1.0) -> float:
    """Items per second of fn over n items (repeated until min_s has passed)."""
    done, started = 0, time.perf_counter()
    while True:
        for i in range(n):
            fn(i)
        done += n
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return done / elapsed


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CJK) for _ in range(n))


def ocr(description: str) -> str:
    """A MedOCR-style JSON answer."""
    return json.dumps({"影像描述": description, "影像诊断": "x"}, ensure_ascii=False)


def naive_choice(answer: str, reference: frozenset[str]) -> bool:
    """A straightforward extraction: every capital A-J in the text, compared as a set."""
    return frozenset(re.findall(r"[A-J]", answer)) == reference


def naive_rouge_l(candidate: str, reference: str) -> float:
    lcs = reference_lcs_length(candidate, reference)
    if not lcs:
        return 0.0
    p, r = lcs / len(candidate), lcs / len(reference)
    return 2 * p * r / (p + r)


def main() -> None:
    score_item("<A>", ItemKey("i", "d", "choice_single", ("A",)))  # load the library first
    rng = random.Random(1)
    answers = [
        rng.choice(["<{}>", "答案：<{}>", "答：{}", "The answer is ({})", "{}"]).format(
            rng.choice("ABCDE")
        )
        + text(rng, rng.randint(0, 40))
        for _ in range(5000)
    ]
    multi = [
        "<" + ", ".join(sorted(rng.sample("ABCDEFGH", rng.randint(1, 4)))) + ">"
        for _ in range(5000)
    ]
    long_pairs = [(text(rng, 200), text(rng, 200)) for _ in range(2000)]
    kp_answers = [text(rng, 300) for _ in range(2000)]
    key_points = [tuple(text(rng, 6) for _ in range(5)) for _ in range(2000)]
    single_key = ItemKey("i", "MedExam", "choice_single", ("B",))
    multi_key = ItemKey("i", "DDx-advanced", "choice_multi", ("A", "C"))

    rows: list[tuple[str, float, float | None, str]] = []

    def add(name: str, fast: float, slow: float | None, note: str = "") -> None:
        rows.append((name, fast, slow, note))

    add(
        "choice_single (MCQ)",
        rate(lambda i: score_item(answers[i], single_key), len(answers)),
        rate(lambda i: naive_choice(answers[i], frozenset("B")), len(answers)),
        "naive: every capital letter",
    )
    add("choice_multi", rate(lambda i: score_item(multi[i], multi_key), len(multi)), None)
    add(
        "rouge_l (200 chars)",
        rate(
            lambda i: score_item(
                long_pairs[i][0], ItemKey("i", "d", "rouge_l", (long_pairs[i][1],))
            ),
            len(long_pairs),
        ),
        rate(lambda i: naive_rouge_l(*long_pairs[i]), 200),
        "naive: LCS dynamic programme",
    )
    add(
        "edit similarity (200 chars)",
        rate(
            lambda i: score_item(
                ocr(long_pairs[i][0]),
                ItemKey(
                    "i",
                    "MedOCR",
                    "edit_similarity",
                    (ocr(long_pairs[i][1]),),
                ),
            ),
            len(long_pairs),
        ),
        rate(lambda i: reference_levenshtein(*long_pairs[i]), 200),
        "naive: Levenshtein dynamic programme (distance only)",
    )
    add(
        "bleu (200 chars)",
        rate(
            lambda i: score_item(long_pairs[i][0], ItemKey("i", "d", "bleu", (long_pairs[i][1],))),
            len(long_pairs),
        ),
        None,
    )
    add(
        "key_point_recall (300 chars, 5 points)",
        rate(
            lambda i: score_item(
                kp_answers[i], ItemKey("i", "MedHC", "key_point_recall", (), key_points[i])
            ),
            len(kp_answers),
        ),
        None,
    )
    print(f"{'metric':40} {'items/s':>12} {'naive items/s':>14} {'ratio':>8}")
    for name, fast, slow, note in rows:
        ratio = f"{fast / slow:8.1f}" if slow else f"{'-':>8}"
        naive = f"{slow:14,.0f}" if slow else f"{'-':>14}"
        print(f"{name:40} {fast:12,.0f} {naive} {ratio}  {note}")
        target = {"choice_single (MCQ)": 50_000, "rouge_l (200 chars)": 5_000}.get(name)
        record("metrics", name, fast, "items/s", target)
    print("targets: MCQ >= 50,000 items/s; ROUGE-L >= 5,000 items/s (200-character answers)")


if __name__ == "__main__":
    main()
