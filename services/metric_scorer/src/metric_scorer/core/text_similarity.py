"""Character-level text similarity for Chinese: edit similarity, ROUGE-L and BLEU (pure)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from rapidfuzz.distance import LCSseq, Levenshtein

from metric_scorer.core.structured import (
    PARSED_LIMIT,
    canonical_json,
    extract_json,
    final_answer,
    find_field,
    is_object,
    item_result,
    normalise_text,
    reference_object,
    value_text,
)
from metric_scorer.core.types import ItemKey, ItemResult, Metric


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / max(len(a), len(b)), per character; 1.0 for two empty
    strings."""
    return float(Levenshtein.normalized_similarity(a, b))


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over characters: 2 * LCS / (len(candidate) +
    len(reference)), which is the harmonic mean of LCS precision and recall.

    Characters, not words, because Chinese has no spaces; two empty strings score 1.0.
    """
    if not candidate and not reference:
        return 1.0
    lcs = LCSseq.similarity(candidate, reference)
    return 2 * lcs / (len(candidate) + len(reference))


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU over character n-grams, n = 1..max_n, uniform weights, with brevity
    penalty exp(1 - len(reference) / len(candidate)) when the candidate is not longer.

    Smoothing: the unigram precision is left unsmoothed (no shared character means BLEU 0);
    each higher-order precision is (matches + 1) / (candidate n-grams + 1), add-one smoothing
    (Lin & Och 2004), so one missing 4-gram does not zero the score of a short answer. A
    candidate too short to have n-grams of some order gets precision 1 for it, and the brevity
    penalty charges for the shortness instead. Two empty strings score 1.0, one empty 0.0.

    Raises:
        ValueError: max_n < 1.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n}")
    if not candidate and not reference:
        return 1.0
    if not candidate or not reference:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        cand = _ngrams(candidate, n)
        matches = sum((cand & _ngrams(reference, n)).values())
        total = max(0, len(candidate) - n + 1)
        if n == 1:
            if matches == 0:
                return 0.0
            log_precision += math.log(matches / total)
        else:
            log_precision += math.log((matches + 1) / (total + 1))
    c, r = len(candidate), len(reference)
    brevity = 1.0 if c >= r else math.exp(1 - r / c)
    return min(1.0, brevity * math.exp(log_precision / max_n))


def _ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def _field_text(value: Any) -> str:
    return normalise_text(value_text(value))


def edit_similarity_metric(answer: str, key: ItemKey) -> ItemResult:
    """MedOCR: mean over the reference object's fields (影像描述, 影像诊断) of the edit
    similarity of the answer's field, after normalise_text; a missing field scores 0, an
    answer without a JSON object scores 0.

    Raises:
        ValueError: the key is not one non-empty JSON object.
    """
    reference = reference_object(key)
    found = extract_json(answer, accept=is_object)
    if found is None:
        return item_result(key, 0.0, "")
    total = 0.0
    for name, value in reference.items():
        present, given = find_field(found, name)
        if present:
            total += edit_similarity(_field_text(given), _field_text(value))
    return item_result(key, min(1.0, total / len(reference)), canonical_json(found))


def _plain_text_metric(similarity: Callable[[str, str], float]) -> Metric:
    def metric(answer: str, key: ItemKey) -> ItemResult:
        if not key.reference:
            raise ValueError(f"item {key.item_id!r}: {key.metric} needs a reference text")
        # White space carries no meaning in Chinese text and would count as characters.
        candidate = normalise_text(final_answer(answer))
        score = similarity(candidate, normalise_text(key.reference[0]))
        return item_result(key, min(1.0, max(0.0, score)), candidate[:PARSED_LIMIT])

    return metric


METRICS: dict[str, Metric] = {
    "edit_similarity": edit_similarity_metric,
    "rouge_l": _plain_text_metric(rouge_l),
    "bleu": _plain_text_metric(bleu),
}
