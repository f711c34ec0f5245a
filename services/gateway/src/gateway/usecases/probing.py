"""Probing: a tenant's submissions on one hidden pool whose answers differ in so few items that
comparing their scores would tell those items' keys are flagged to maintainers, with the
evidence (rules: core/probing.py). The partner is not told: nothing it sees changes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from gateway.core.identity import check_tenant_id
from gateway.core.ports import ProbingStore
from gateway.core.probing import (
    DIGEST_BYTES,
    EMPTY,
    Finding,
    StoredDigest,
    compare,
    digest_vector,
    page_token,
    read_token,
)
from gateway.core.submission import MODE_UPLOAD, Record
from gateway.core.uploads import Manifest
from gateway.usecases import metrics
from medbench_runtime.errors import InvalidArgument

log = logging.getLogger(__name__)

# Earlier submissions of the tenant on the pool a new one is compared with (newest first): the
# caps per pool keep a tenant far below it unless a maintainer raised them.
COMPARED = 1000
MAX_PAGE = 500
DEFAULT_PAGE = 100


class Probing:
    """Compares each submission whose answers are final with the tenant's others on its pool;
    lists the findings for maintainers."""

    def __init__(self, store: ProbingStore, compared: int = COMPARED) -> None:
        self._store = store
        self._compared = compared

    async def answers_final(self, record: Record, manifest: Manifest) -> list[Finding]:
        """An upload-mode submission's answers are final: keeps its digest vector and records a
        finding for every other submission of the tenant on the pool that it (nearly) agrees
        with. Returns the new findings. Idempotent (a finding is stored once)."""
        if record["mode"] != MODE_UPLOAD:
            return []
        tenant_id, submission_id = record["tenant_id"], record["_id"]
        items = int(record["expected"])
        datasets = [manifest.by_ordinal.get(o, ("", ""))[1] for o in range(items)]
        answers: list[tuple[int, str]] = []
        # Each answer is read as it is scored: a choice item's by the letters it names.
        formats: dict[int, str] = {}
        async for item_id, answer in self._store.answers(tenant_id, submission_id):
            found = manifest.by_id.get(item_id)
            if found is not None:
                answers.append((found[0], answer))
                formats[found[0]] = manifest.answer_format.get(item_id, "")
        return await self._compare(record, datasets, digest_vector(answers, items, formats))

    async def api_answers_final(
        self, record: Record, manifest: Manifest, digests: bytes
    ) -> list[Finding]:
        """An API-mode run whose endpoint answered every item: its answers' digests by ordinal,
        as the dispatcher took them (medbench_runtime.answer_digest, the same reading as an
        upload's), compared as an upload's are. Returns the new findings. Idempotent."""
        if record["mode"] == MODE_UPLOAD:
            return []
        items = int(record["expected"])
        datasets = [manifest.by_ordinal.get(o, ("", ""))[1] for o in range(items)]
        # Ordinals past the pool's items are left out; items the digests do not reach hold
        # the digest of no answer, as in an upload's vector.
        vector = digests[: items * DIGEST_BYTES]
        vector += EMPTY * (items - len(vector) // DIGEST_BYTES)
        return await self._compare(record, datasets, vector)

    async def _compare(self, record: Record, datasets: list[str], vector: bytes) -> list[Finding]:
        """Keeps the submission's digest vector and records a finding for every other
        submission of the tenant on the pool that it (nearly) agrees with."""
        tenant_id, submission_id = record["tenant_id"], record["_id"]
        digest = StoredDigest(
            submission_id,
            tenant_id,
            record["pool_id"],
            int(record["track"]),
            record["created_at"],
            vector,
        )
        await self._store.save_digest(digest)
        now = datetime.now(UTC)
        new: list[Finding] = []
        for other in await self._store.digests(tenant_id, digest.pool_id, self._compared + 1):
            if other.submission_id == submission_id:
                continue
            finding = compare(digest, other, datasets, now)
            if finding is not None and await self._store.add_finding(finding):
                metrics.probing_flagged(tenant_id, digest.track)
                log.info(
                    "probing finding %s: tenant %s, pool %s, %d of %d answers differ",
                    finding.finding_id,
                    tenant_id,
                    finding.pool_id,
                    finding.differing,
                    finding.items,
                )
                new.append(finding)
        return new

    async def findings(
        self, tenant_id: str, pool_id: str, page_size: int, token: str
    ) -> tuple[list[Finding], str]:
        """One page of findings, newest first, and the next page's token ("" on the last)."""
        if tenant_id:
            check_tenant_id(tenant_id)
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE
        after = read_token(token) if token else None
        found = await self._store.findings(tenant_id, pool_id, after, size + 1)
        more = len(found) > size
        found = found[:size]
        return found, page_token(found[-1]) if more and found else ""
