"""References move with a download's option order; answers translated alike score alike."""

from __future__ import annotations

import itertools
from pathlib import Path

from medbench_client.bank_files import answers_by_item, read_jsonl
from medbench_devstack.answers import translate
from metric_scorer.core.choice import shown_reference
from metric_scorer.core.metrics import score_item
from metric_scorer.core.types import ItemKey
from rotator.core.options import letter_map, parse_options, permutation_for, relabel

BANK = Path(__file__).resolve().parents[3] / "services/rotator/src/rotator/sample_bank"


def test_shown_reference_agrees_with_the_rotator_letter_map() -> None:
    for order in itertools.permutations(range(5)):
        mapping = letter_map(order)
        for reference in (("A",), ("B", "D"), ("A", "C", "E")):
            assert shown_reference(reference, order) == tuple(sorted(mapping[r] for r in reference))
    assert shown_reference(("C",), None) == ("C",)


def test_every_sample_answer_scores_the_same_in_every_tenants_order() -> None:
    rows = list(read_jsonl(BANK / "items.jsonl"))
    answers = answers_by_item(read_jsonl(BANK / "baseline_answers.jsonl"))
    for tenant in ("hospital-a", "hospital-b", "hospital-c"):
        for row in rows:
            block = parse_options(row["question"])
            assert block is not None
            order = permutation_for(b"secret", tenant, row["item_id"], len(block.texts))
            shown = relabel(block, order)
            key = ItemKey(
                row["item_id"], row["dataset"], row["answer_format"], tuple(row["reference"])
            )
            moved = ItemKey(
                key.item_id, key.dataset, key.metric, shown_reference(key.reference, order)
            )
            original = score_item(answers[row["item_id"]], key).score
            translated = translate(answers[row["item_id"]], row["question"], shown)
            assert score_item(translated, moved).score == original, (tenant, row["item_id"])
