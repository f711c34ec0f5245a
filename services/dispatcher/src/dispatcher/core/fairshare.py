"""Fair sharing of request slots across active submissions: deficit round robin (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable


class _DeficitRoundRobin:
    """Deficit round robin over keys; every request slot costs 1.

    Keys take turns in the order they were added. At the start of its turn a key with pending
    work gains its quantum of credit and is served once per whole credit; a key found without
    work loses its credit, so idling cannot bank slots for later.
    """

    def __init__(self) -> None:
        self._order: list[str] = []
        self._credit: dict[str, float] = {}
        self._turn = 0
        self._granted = False

    def __contains__(self, key: str) -> bool:
        return key in self._credit

    def __len__(self) -> int:
        return len(self._order)

    def members(self) -> list[str]:
        return list(self._order)

    def add(self, key: str) -> None:
        self._order.append(key)
        self._credit[key] = 0.0

    def remove(self, key: str) -> None:
        index = self._order.index(key)
        del self._order[index]
        del self._credit[key]
        if index < self._turn:
            self._turn -= 1
        elif index == self._turn:
            # The next key inherits the turn and starts it fresh.
            self._granted = False
        if self._turn >= len(self._order):
            self._turn = 0

    def pick(self, eligible: Callable[[str], bool], quantum: Callable[[str], float]) -> str | None:
        live = {key for key in self._order if eligible(key)}
        if not live:
            for key in self._order:
                self._credit[key] = 0.0
            return None
        visited = 0
        while True:
            key = self._order[self._turn]
            if key in live:
                if not self._granted:
                    self._credit[key] += quantum(key)
                    self._granted = True
                if self._credit[key] >= 1.0:
                    self._credit[key] -= 1.0
                    return key
            else:
                self._credit[key] = 0.0
            self._turn = (self._turn + 1) % len(self._order)
            self._granted = False
            visited += 1
            if visited % len(self._order) == 0:
                self._skip_idle_rounds(live, quantum)

    def _skip_idle_rounds(self, live: set[str], quantum: Callable[[str], float]) -> None:
        """Grants at once the rounds in which no key would reach a whole credit.

        Keeps a pick O(keys) even with small quanta.
        """
        rounds = min(math.ceil((1.0 - self._credit[key]) / quantum(key)) for key in live) - 1
        if rounds > 0:
            for key in live:
                self._credit[key] += rounds * quantum(key)


class FairScheduler:
    """Decides whose request goes out next among the active submissions.

    Slots are shared per tenant first, then among that tenant's submissions, each level by
    deficit round robin. With weight 1 every tenant with pending work gets an equal share of
    slots, and so does every such submission within a tenant, whatever their sizes: a
    100,000-item run cannot starve a 300-item one.

    A submission's weight is its quantum among its tenant's submissions; a tenant's quantum is
    the largest weight among its submissions with pending work.
    """

    def __init__(self) -> None:
        self._tenants = _DeficitRoundRobin()
        self._submissions: dict[str, _DeficitRoundRobin] = {}
        self._tenant_of: dict[str, str] = {}
        self._weight: dict[str, float] = {}

    def __contains__(self, submission_id: str) -> bool:
        return submission_id in self._tenant_of

    def add(self, submission_id: str, tenant_id: str, weight: float = 1.0) -> None:
        """Makes a submission active; adding it again only updates its weight."""
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a positive number, got {weight}")
        known = self._tenant_of.get(submission_id)
        if known is not None:
            if known != tenant_id:
                raise ValueError(
                    f"submission {submission_id} belongs to tenant {known}, not {tenant_id}"
                )
            self._weight[submission_id] = weight
            return
        if tenant_id not in self._submissions:
            self._submissions[tenant_id] = _DeficitRoundRobin()
            self._tenants.add(tenant_id)
        self._submissions[tenant_id].add(submission_id)
        self._tenant_of[submission_id] = tenant_id
        self._weight[submission_id] = weight

    def remove(self, submission_id: str) -> None:
        """Forgets a submission (finished, failed or cancelled); unknown ids are ignored."""
        tenant_id = self._tenant_of.pop(submission_id, None)
        if tenant_id is None:
            return
        del self._weight[submission_id]
        submissions = self._submissions[tenant_id]
        submissions.remove(submission_id)
        if not submissions:
            del self._submissions[tenant_id]
            self._tenants.remove(tenant_id)

    def next_submission(self, has_work: Callable[[str], bool]) -> str | None:
        """The submission whose next request takes the coming slot; None if none has work.

        Args:
            has_work: whether a submission has a request ready to send; asked at most once
                per submission per call.
        """
        answers: dict[str, bool] = {}

        def ready(submission_id: str) -> bool:
            if submission_id not in answers:
                answers[submission_id] = has_work(submission_id)
            return answers[submission_id]

        def tenant_ready(tenant_id: str) -> bool:
            return any(ready(s) for s in self._submissions[tenant_id].members())

        def tenant_quantum(tenant_id: str) -> float:
            return max(self._weight[s] for s in self._submissions[tenant_id].members() if ready(s))

        tenant_id = self._tenants.pick(tenant_ready, tenant_quantum)
        if tenant_id is None:
            return None
        return self._submissions[tenant_id].pick(ready, self._weight.__getitem__)
