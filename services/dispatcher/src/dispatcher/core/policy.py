"""Decoding settings per board, and fitting a chat prompt into the model's context window (pure).

Token counts here come from ``estimate_tokens``, an offline estimate that needs no tokenizer
download and errs on the high side for Chinese, so a prompt it accepts leaves the model's real
tokenizer some room.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from medbench_runtime.errors import InvalidArgument

API_BOARD = "api"
"""The official board: every submission is decoded with ``OFFICIAL``."""
SELF_TEST_BOARD = "self_test"
"""The self-test board: a partner may declare its own decoding settings."""

MESSAGE_OVERHEAD_TOKENS = 8
"""Allowance per message for the chat template (role markers, separators)."""
ELISION_MARKER = "……（中间内容已省略）……"
"""Joins the head and tail of a message whose middle was cut."""
LAST_USER_SHARE = 0.25
"""Share of the prompt budget the last user message keeps (or all of itself, if shorter)."""

MAX_TEMPERATURE = 2.0
MAX_COMPLETION_TOKENS = 32768


class InvalidDecodingSettings(InvalidArgument, ValueError):
    """Declared decoding settings are out of range; the message names the field."""


class PromptDoesNotFit(ValueError):
    """The messages that must be kept overflow the budget even with empty contents."""


@dataclass(frozen=True)
class DecodingSettings:
    """How the dispatcher asks an endpoint to decode."""

    temperature: float
    max_tokens: int
    """Most tokens the model may generate; reserved out of the context window."""
    context_window: int
    """Tokens the model attends to in total: prompt plus completion."""
    top_p: float | None = None
    """Nucleus sampling; None leaves it to the endpoint."""

    @property
    def prompt_budget(self) -> int:
        """Tokens left for the prompt once the completion is reserved."""
        return self.context_window - self.max_tokens


OFFICIAL = DecodingSettings(temperature=0.7, max_tokens=512, context_window=2048)
"""The official board's fixed settings."""


def check_settings(settings: DecodingSettings) -> DecodingSettings:
    """Returns settings unchanged, or raises InvalidDecodingSettings naming the bad field."""
    if not 0.0 <= settings.temperature <= MAX_TEMPERATURE:
        raise InvalidDecodingSettings(
            f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {settings.temperature}"
        )
    if not 1 <= settings.max_tokens <= MAX_COMPLETION_TOKENS:
        raise InvalidDecodingSettings(
            f"max_tokens must be between 1 and {MAX_COMPLETION_TOKENS}, got {settings.max_tokens}"
        )
    if settings.context_window <= settings.max_tokens:
        raise InvalidDecodingSettings(
            f"context_window must be greater than max_tokens ({settings.max_tokens}), "
            f"got {settings.context_window}"
        )
    if settings.top_p is not None and not 0.0 < settings.top_p <= 1.0:
        raise InvalidDecodingSettings(f"top_p must be in (0, 1], got {settings.top_p}")
    return settings


def settings_for(board: str, declared: DecodingSettings | None) -> DecodingSettings:
    """The settings a submission is decoded with.

    The official board ignores anything declared, so that every model on it is compared under
    the same settings; the self-test board honours declared settings once they pass
    ``check_settings``.
    """
    if board == API_BOARD:
        return OFFICIAL
    if board == SELF_TEST_BOARD:
        return OFFICIAL if declared is None else check_settings(declared)
    raise ValueError(f"unknown board {board!r}; expected {API_BOARD!r} or {SELF_TEST_BOARD!r}")


# A "run" is a maximal stretch of ASCII letters/digits, or of ASCII punctuation and whitespace
# (any Unicode whitespace); every other character is a piece of its own.
_RUN_CLASSES = rf"[A-Za-z0-9]+|[\s{re.escape(string.punctuation)}]+"
_RUNS = re.compile(_RUN_CLASSES)
_PIECES = re.compile(rf"{_RUN_CLASSES}|.", re.DOTALL)


def _piece_tokens(length: int) -> int:
    return (length + 3) // 4


def estimate_tokens(text: str) -> int:
    """Offline token estimate, no tokenizer needed.

    Rule: every run of ASCII letters/digits counts ceil(len/4) tokens; every run of ASCII
    punctuation and whitespace counts ceil(len/4); every other character counts 1. "Other"
    covers CJK ideographs, kana and full-width punctuation such as "，" and "。" (Chinese
    tokenizers usually give those a token of their own), other non-ASCII letters, and symbols.

    For Chinese this errs on the high side with Chinese-aware tokenizers, which merge common
    characters and words into multi-character tokens, so a prompt the estimate accepts fits. A
    byte-level tokenizer without Chinese merges can exceed one token per character; such an
    endpoint should declare a smaller context_window.

    The estimate never falls when a character is appended, and est(a + b) <= est(a) + est(b).
    """
    run_chars = 0
    tokens = 0
    for match in _RUNS.finditer(text):
        length = match.end() - match.start()
        run_chars += length
        tokens += _piece_tokens(length)
    return tokens + len(text) - run_chars


MARKER_TOKENS = estimate_tokens(ELISION_MARKER)


def _longest_prefix(text: str, limit: int) -> str:
    """The longest prefix whose estimate is at most limit (exactly limit when text is longer)."""
    used = 0
    for match in _PIECES.finditer(text):
        cost = _piece_tokens(match.end() - match.start())
        if used + cost > limit:
            # A prefix of a run of k characters costs ceil(k/4): 4 characters per token left.
            return text[: match.start() + 4 * (limit - used)]
        used += cost
    return text


def _longest_suffix(text: str, limit: int) -> str:
    # Reversal maps runs to runs, so the estimate of a string and of its reverse agree.
    return _longest_prefix(text[::-1], limit)[::-1]


def cut_middle(text: str, limit: int) -> str:
    """Text cut to at most ``limit`` estimated tokens by removing its middle.

    The tokens left after ``ELISION_MARKER`` go 2/3 to the head and 1/3 to the tail. When even
    the marker does not fit, only the tail is kept, since a question usually ends a message.
    """
    if estimate_tokens(text) <= limit:
        return text
    room = limit - MARKER_TOKENS
    if room <= 0:
        return _longest_suffix(text, max(limit, 0))
    head_tokens = 2 * room // 3
    return (
        _longest_prefix(text, head_tokens)
        + ELISION_MARKER
        + _longest_suffix(text, room - head_tokens)
    )


def _turns(messages: Sequence[tuple[str, str]]) -> list[list[int]]:
    """Indices of the non-system messages, grouped into turns that each begin at a user message.

    Messages before the first user message form a turn of their own.
    """
    turns: list[list[int]] = []
    for index, (role, _) in enumerate(messages):
        if role == "system":
            continue
        if role == "user" or not turns:
            turns.append([])
        turns[-1].append(index)
    return turns


def _water_fill(sizes: list[int], room: int) -> list[int]:
    """Caps the largest sizes at one level so that they sum to at most room, using room fully."""
    if sum(sizes) <= room:
        return list(sizes)
    low, high = 0, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(size, mid) for size in sizes) <= room:
            low = mid
        else:
            high = mid - 1
    limits = [min(size, low) for size in sizes]
    spare = room - sum(limits)
    for index, size in enumerate(sizes):
        if spare == 0:
            break
        if size > limits[index]:
            limits[index] += 1
            spare -= 1
    return limits


def fit_messages(
    messages: list[tuple[str, str]], settings: DecodingSettings
) -> tuple[list[tuple[str, str]], bool]:
    """Fits (role, content) messages into the prompt budget; returns them and whether any changed.

    The budget is ``context_window - max_tokens`` estimated tokens, and every message costs its
    content's estimate plus ``MESSAGE_OVERHEAD_TOKENS``. Messages that fit come back unchanged
    with False. Otherwise, deterministically:

    1. Whole turns are dropped, oldest first. A turn is a user message with the non-system
       messages after it. System messages are never dropped, and neither is the last turn (the
       one holding the last user message, or the only turn when there is no user message).
    2. If what remains still overflows, the longest contents are cut in the middle
       (``cut_middle``) to one common cap, the largest that fits. The last user message keeps at
       least ``LAST_USER_SHARE`` of the budget, or all of itself when it is shorter.

    A fitted prompt fits, so fitting it again changes nothing.

    Raises:
        PromptDoesNotFit: the kept messages' overheads alone exceed the budget.
    """
    budget = settings.prompt_budget
    sizes = [estimate_tokens(content) for _, content in messages]
    total = sum(sizes) + MESSAGE_OVERHEAD_TOKENS * len(messages)
    if total <= budget:
        return list(messages), False

    dropped: set[int] = set()
    for turn in _turns(messages)[:-1]:
        if total <= budget:
            break
        dropped.update(turn)
        total -= sum(sizes[i] + MESSAGE_OVERHEAD_TOKENS for i in turn)
    kept = [i for i in range(len(messages)) if i not in dropped]
    if total <= budget:
        return [messages[i] for i in kept], True

    room = budget - MESSAGE_OVERHEAD_TOKENS * len(kept)
    if room < 0:
        raise PromptDoesNotFit(
            f"the prompt budget of {budget} tokens (context_window - max_tokens) cannot hold the "
            f"{len(kept)} messages that must be kept at {MESSAGE_OVERHEAD_TOKENS} tokens each"
        )
    kept_sizes = [sizes[i] for i in kept]
    limits = _water_fill(kept_sizes, room)
    users = [pos for pos, i in enumerate(kept) if messages[i][0] == "user"]
    if users:
        last = users[-1]
        reserve = min(kept_sizes[last], int(budget * LAST_USER_SHARE), room)
        if limits[last] < reserve:
            others = kept_sizes[:last] + kept_sizes[last + 1 :]
            rest = _water_fill(others, room - reserve)
            limits = rest[:last] + [reserve] + rest[last:]
    fitted = [
        (messages[i][0], cut_middle(messages[i][1], limit))
        for i, limit in zip(kept, limits, strict=True)
    ]
    return fitted, True
