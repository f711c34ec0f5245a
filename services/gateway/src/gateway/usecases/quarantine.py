"""QuarantineReview: maintainers and operators list, retry and drop quarantined events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.core.ports import Quarantine
from gateway.core.submission import Record
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class Page:
    entries: list[Record]
    next_page_token: str
    held: int


class QuarantineReview:
    """One entry at a time, each decision recorded with who made it."""

    def __init__(self, quarantine: Quarantine, publisher: Any) -> None:
        self._quarantine = quarantine
        self._publisher = publisher

    async def list(self, status: str, service: str, page_size: int, page_token: str) -> Page:
        states = self._quarantine.states
        if status and status not in states:
            raise InvalidArgument(f"status must be one of {', '.join(states)} or empty")
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE
        try:
            entries = await self._quarantine.list(status, service, size + 1, page_token)
        except ValueError:
            raise InvalidArgument("page_token is not one this API returned") from None
        more = len(entries) > size
        entries = entries[:size]
        token = self._quarantine.page_token(entries[-1]) if more else ""
        return Page(entries, token, await self._quarantine.held_count())

    async def retry(self, entry_id: str, by: str) -> Record:
        """Sends a held entry on again: back to its outbox, or to its topic."""
        _require(entry_id)
        try:
            entry = await self._quarantine.retry(entry_id, by, self._publisher)
        except LookupError:
            raise NotFound(f"no held quarantine entry {entry_id!r}") from None
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        return await self._quarantine.get(entry["_id"])

    async def drop(self, entry_id: str, by: str) -> Record:
        """Gives a held entry up (kept, marked dropped, for the record)."""
        _require(entry_id)
        try:
            entry = await self._quarantine.drop(entry_id, by)
        except LookupError:
            raise NotFound(f"no held quarantine entry {entry_id!r}") from None
        return await self._quarantine.get(entry["_id"])


def _require(entry_id: str) -> None:
    if not entry_id:
        raise InvalidArgument("entry_id is required")
