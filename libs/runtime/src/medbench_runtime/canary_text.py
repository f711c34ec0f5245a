"""How a detail canary moves a number (the patient's age) through an item's texts (pure).

The rotator shows a canary's prompt with the number moved; the scorers score it against its key
with the number moved the same way (reference, key points, the judge's prompt): one rule for
every service, so that what a download showed and what it is scored against never disagree.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def standalone(number: str) -> re.Pattern[str]:
    """The number as a token of its own: not part of a longer number or of a decimal."""
    return re.compile(rf"(?<![0-9.．]){re.escape(number)}(?![0-9])(?![.．][0-9])")


def move_number(text: str, number: str, to: str) -> str:
    """text with every stand-alone occurrence of number written as to."""
    return standalone(number).sub(to, text) if number and to else text
