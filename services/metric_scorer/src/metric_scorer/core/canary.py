"""Canaries (pure): an answer to a canary that is right for its original item is a leak signal.

A canary is a pool item a download shows altered for its tenant (the rotator's core/canaries.py),
scored like every other item against its own key. Its original's right answer is wrong here:
the original's option letters of an order canary, the original age of a detail canary (which the
download never shows). Whoever answers with it read the original somewhere, not the question.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

ORDER = "order"
DETAIL = "detail"


@dataclass(frozen=True)
class LeakSignal:
    """A canary answered with its original's right answer (maintainers only)."""

    submission_id: str
    tenant_id: str
    pool_id: str
    item_id: str
    dataset: str
    kind: str
    matched: str
    """What of the original's answer the answer gave: "letters A,C", "value 45"."""


def original_answer(kind: str, originals: Sequence[str], answer: str, parsed: str) -> str:
    """What of a right answer to the canary's original the answer gives ("" when nothing):
    parsed option letters equal to one of the original's (ORDER), or the original value as a
    number of its own in the answer (DETAIL)."""
    if kind == ORDER:
        return f"letters {parsed}" if parsed and parsed in originals else ""
    if kind == DETAIL:
        text = unicodedata.normalize("NFKC", answer)
        for value in originals:
            if re.search(rf"(?<![0-9.]){re.escape(value)}(?![0-9])(?!\.[0-9])", text):
                return f"value {value}"
    return ""
