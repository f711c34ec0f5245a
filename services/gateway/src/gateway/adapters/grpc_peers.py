"""Clients of the rotator, the aggregator and the dispatcher (the Rotator, PoolImages, Reports
and Dispatch ports), the per-submission item manifest and image caches and the short
leaderboard cache."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from prometheus_client import Counter

from gateway.core.images import ImagesBuilder, SubmissionImages
from gateway.core.ports import Assignment, ImageRange, PreflightResult, Publication
from gateway.core.ttl_cache import TtlCache
from gateway.core.uploads import Manifest
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc
from medbench.report.v1 import report_pb2, report_service_pb2, report_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

LEADERBOARD_READS = Counter(
    "medbench_gateway_leaderboard_reads_total",
    "ListLeaderboard calls, by whether the gateway's short cache answered (hit) or the "
    "aggregator did (miss).",
    ["result"],
)


def _translate(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    """A peer's status as the gateway's own error (unknown statuses: UNAVAILABLE)."""
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(exc.details() or what)
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(exc.details() or what)
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(exc.details() or what)
    return Unavailable(f"{what} failed: {exc.code().name} {exc.details()}")


async def _call(coro: object, what: str) -> object:
    try:
        return await coro  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        raise _translate(exc, what) from exc


class RotatorClient:
    """TaskPoolService calls the gateway needs, with caches of immutable pool manifests and of
    the images of submissions' items."""

    def __init__(
        self, channel: grpc.aio.Channel, cached_pools: int = 32, disclosure_cache_s: float = 5.0
    ) -> None:
        self._stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(channel)
        # Disclosure is one-way: a disclosed pool is remembered for good, a live answer is asked
        # again after disclosure_cache_s (a burst of calls shares one GetPool).
        self._live: TtlCache[str, datetime | None] = TtlCache(disclosure_cache_s, max_entries=1024)
        self._disclosed: dict[str, datetime] = {}
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        self._cached_pools = cached_pools
        self._lock = asyncio.Lock()
        # A submission's items never change once assigned: kept an hour (bounding memory only);
        # concurrent first calls for one submission share one pass over its prompts.
        self._images: TtlCache[str, SubmissionImages] = TtlCache(3600.0, cached_pools)

    async def assign(
        self, submission_id: str, tenant_id: str, track: int, api: bool = False
    ) -> Assignment:
        response = await _call(
            self._stub.AssignItems(
                taskpool_service_pb2.AssignItemsRequest(
                    submission_id=submission_id,
                    tenant_id=tenant_id,
                    track=track,
                    # The two boards never share data (MedBench shows them apart).
                    board=taskpool_pb2.BOARD_API if api else taskpool_pb2.BOARD_UPLOAD,
                ),
                timeout=30,
            ),
            "assigning items",
        )
        assert isinstance(response, taskpool_service_pb2.AssignItemsResponse)
        a = response.assignment
        return Assignment(a.pool_id, a.item_count, a.canary_items)

    def prompts(self, submission_id: str, include_prompts: bool) -> grpc.aio.UnaryStreamCall:
        return self._stub.GetPrompts(
            taskpool_service_pb2.GetPromptsRequest(
                submission_id=submission_id, include_prompts=include_prompts
            )
        )

    async def cycle(self, pool_id: str) -> str:
        """The evaluation cycle a pool serves ("" for pools published outside rotation)."""
        response = await _call(
            self._stub.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id=pool_id), timeout=5),
            "reading the pool",
        )
        assert isinstance(response, taskpool_service_pb2.GetPoolResponse)
        return response.pool.cycle

    async def disclosed(self, pool_id: str) -> datetime | None:
        """When the pool was disclosed (GetPool's disclosed_at), None while it is live; cached,
        see __init__."""
        found = self._disclosed.get(pool_id)
        if found is not None:
            return found

        async def load() -> datetime | None:
            response = await _call(
                self._stub.GetPool(taskpool_service_pb2.GetPoolRequest(pool_id=pool_id), timeout=5),
                "reading the pool",
            )
            assert isinstance(response, taskpool_service_pb2.GetPoolResponse)
            if not response.pool.HasField("disclosed_at"):
                return None
            return response.pool.disclosed_at.ToDatetime(tzinfo=UTC)

        disclosed, _ = await self._live.get(pool_id, load)
        if disclosed is not None:
            self._disclosed[pool_id] = disclosed  # pools are few: a handful per cycle
        return disclosed

    async def require_pool(self, track: int, api: bool) -> str:
        """The id of the track's board's current pool; FAILED_PRECONDITION when it has no
        published pool (nothing assigned)."""
        response = await _call(
            self._stub.GetPool(
                taskpool_service_pb2.GetPoolRequest(
                    track=track,
                    board=taskpool_pb2.BOARD_API if api else taskpool_pb2.BOARD_UPLOAD,
                ),
                timeout=5,
            ),
            "reading the board's current pool",
        )
        assert isinstance(response, taskpool_service_pb2.GetPoolResponse)
        return response.pool.pool_id

    async def current_pool(self, track: int, api: bool) -> str:
        """The id of the track's board's current pool, "" when it has none."""
        try:
            return await self.require_pool(track, api)
        except (FailedPrecondition, NotFound):
            return ""

    async def manifest(self, submission_id: str, pool_id: str) -> Manifest:
        """The submission's manifest (its pool's items plus its canaries), cached: it never
        changes once assigned."""
        async with self._lock:
            found = self._manifests.get(submission_id)
            if found is not None:
                self._manifests.move_to_end(submission_id)
                return found
            builder = _ManifestBuilder()
            try:
                async for batch in self.prompts(submission_id, include_prompts=False):
                    builder.add(batch)
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(f"loading items of pool {pool_id}: {exc.details()}") from exc
            manifest = builder.build(pool_id)
            self._keep(submission_id, manifest)
            return manifest

    async def download(
        self, submission_id: str
    ) -> AsyncIterator[taskpool_service_pb2.GetPromptsResponse]:
        """The submission's prompts, as the partner downloads them. A download read to its end
        also leaves the submission's manifest in the cache (the same items, ordinals, datasets
        and prompt hashes): the first upload then needs no second pass over the pool."""
        builder = _ManifestBuilder()
        pool_id = ""
        try:
            async for batch in self.prompts(submission_id, include_prompts=True):
                builder.add(batch)
                pool_id = pool_id or batch.pool_id
                yield batch
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"reading prompts failed: {exc.details()}") from exc
        if pool_id:
            async with self._lock:
                if submission_id not in self._manifests:
                    self._keep(submission_id, builder.build(pool_id))

    async def images(self, submission_id: str) -> SubmissionImages:
        """The images of the submission's served items, from one pass over its prompts
        (cached)."""

        async def load() -> SubmissionImages:
            builder = ImagesBuilder()
            try:
                async for batch in self.prompts(submission_id, include_prompts=True):
                    for item in batch.items:
                        if not item.canary:
                            builder.add(item.item_id, item.image_paths, item.image_ids)
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(f"reading the items' images: {exc.details()}") from exc
            return builder.build()

        found, _ = await self._images.get(submission_id, load)
        return found

    async def image_range(
        self, image_id: str, offset: int, max_bytes: int, tenant_id: str = ""
    ) -> ImageRange:
        """GetImage of a range of the image's bytes (never the whole of a large image in one
        message); of the tenant's watermarked copy with tenant_id."""
        response = await _call(
            self._stub.GetImage(
                taskpool_service_pb2.GetImageRequest(
                    image_id=image_id, offset=offset, max_bytes=max_bytes, tenant_id=tenant_id
                ),
                timeout=30,
            ),
            "reading an image",
        )
        assert isinstance(response, taskpool_service_pb2.GetImageResponse)
        return ImageRange(
            response.content, response.media_type, response.size, response.served_sha256
        )

    async def image_info(self, image_id: str, tenant_id: str = "") -> ImageRange:
        """GetImage without content: the media type, size and sha256 (of the tenant's
        watermarked copy with tenant_id: the rotator makes it if it has not yet)."""
        response = await _call(
            self._stub.GetImage(
                taskpool_service_pb2.GetImageRequest(
                    image_id=image_id, info_only=True, tenant_id=tenant_id
                ),
                timeout=30 if tenant_id else 10,
            ),
            "reading an image's size",
        )
        assert isinstance(response, taskpool_service_pb2.GetImageResponse)
        return ImageRange(b"", response.media_type, response.size, response.served_sha256)

    def _keep(self, submission_id: str, manifest: Manifest) -> None:
        self._manifests[submission_id] = manifest
        while len(self._manifests) > self._cached_pools:
            self._manifests.popitem(last=False)


class _ManifestBuilder:
    """A manifest, from the GetPrompts batches of one submission."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[int, str]] = {}
        self.by_ordinal: dict[int, tuple[str, str]] = {}
        self.hashes: dict[str, str] = {}
        self.formats: dict[str, str] = {}

    def add(self, batch: taskpool_service_pb2.GetPromptsResponse) -> None:
        for item in batch.items:
            self.by_id[item.item_id] = (item.ordinal, item.dataset)
            self.by_ordinal[item.ordinal] = (item.item_id, item.dataset)
            self.hashes[item.item_id] = item.prompt_hash
            self.formats[item.item_id] = item.answer_format

    def build(self, pool_id: str) -> Manifest:
        return Manifest(pool_id, self.by_id, self.by_ordinal, self.hashes, self.formats)


class ReportClient:
    """ReportService and LeaderboardService calls (aggregator).

    Leaderboard pages are public and the same for every caller, and change only when an entry
    is published: each distinct request's answer is kept for ``board_cache_s`` seconds
    (concurrent identical requests share one call), and forgotten whenever a publication goes
    through this gateway, so a partner who publishes sees the entry at once.
    """

    def __init__(self, channel: grpc.aio.Channel, board_cache_s: float = 0.0) -> None:
        self._stub = report_service_pb2_grpc.ReportServiceStub(channel)
        self._boards = leaderboard_service_pb2_grpc.LeaderboardServiceStub(channel)
        self._board_cache: TtlCache[bytes, leaderboard_service_pb2.ListLeaderboardResponse] = (
            TtlCache(board_cache_s)
        )

    async def item_results(
        self, submission_id: str, tenant_id: str
    ) -> AsyncIterator[report_service_pb2.StreamItemResultsResponse]:
        """The per-item results, in batches, as the aggregator streams them."""
        request = report_service_pb2.StreamItemResultsRequest(
            submission_id=submission_id, tenant_id=tenant_id
        )
        try:
            async for batch in self._stub.StreamItemResults(request, timeout=120):
                yield batch
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "reading item results") from exc

    async def publish(self, publication: Publication) -> bool:
        model = publication.model
        request = leaderboard_service_pb2.PublishEntryRequest(
            submission_id=publication.submission_id,
            tenant_id=publication.tenant_id,
            published=publication.published,
            track=publication.track,  # type: ignore[arg-type]
            board=taskpool_pb2.BOARD_API if publication.api else taskpool_pb2.BOARD_UPLOAD,
            cycle=publication.cycle,
            model_name=model["name"],
            model_version=model.get("version", ""),
            organisation=model.get("organisation", ""),
            open_source=model.get("open_source", False),
            parameter_count=model.get("parameter_count", ""),
            release_date=model.get("release_date", ""),
        )
        try:
            response = await _call(
                self._boards.PublishEntry(request, timeout=10), "publishing to the leaderboard"
            )
        finally:
            # Even a failed call may have published (the reply was lost).
            self._board_cache.clear()
        assert isinstance(response, leaderboard_service_pb2.PublishEntryResponse)
        return response.published

    async def leaderboard(
        self, request: leaderboard_service_pb2.ListLeaderboardRequest
    ) -> leaderboard_service_pb2.ListLeaderboardResponse:
        async def load() -> leaderboard_service_pb2.ListLeaderboardResponse:
            response = await _call(
                self._boards.ListLeaderboard(request, timeout=10), "reading the leaderboard"
            )
            assert isinstance(response, leaderboard_service_pb2.ListLeaderboardResponse)
            return response

        response, cached = await self._board_cache.get(
            request.SerializeToString(deterministic=True), load
        )
        LEADERBOARD_READS.labels("hit" if cached else "miss").inc()
        return response

    async def scored(self, submission_id: str) -> int:
        """Items scored so far."""
        response = await _call(
            self._stub.GetProgress(
                report_service_pb2.GetProgressRequest(submission_id=submission_id), timeout=2
            ),
            "reading scoring progress",
        )
        assert isinstance(response, report_service_pb2.GetProgressResponse)
        return response.scored_items

    async def report(
        self, submission_id: str, tenant_id: str, exact: bool = False
    ) -> report_pb2.Report:
        response = await _call(
            self._stub.GetReport(
                report_service_pb2.GetReportRequest(
                    submission_id=submission_id, tenant_id=tenant_id, exact=exact
                ),
                timeout=10,
            ),
            "reading the report",
        )
        assert isinstance(response, report_service_pb2.GetReportResponse)
        return response.report


class DispatchClient:
    """DispatcherService commands (API mode); the dispatch progress arrives as events."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = dispatch_service_pb2_grpc.DispatcherServiceStub(channel)

    async def preflight(self, base_url: str, model: str, api_key: str) -> PreflightResult:
        response = await _call(
            self._stub.Preflight(
                dispatch_service_pb2.PreflightRequest(
                    base_url=base_url, model=model, api_key=api_key
                ),
                timeout=150,
            ),
            "checking the endpoint",
        )
        assert isinstance(response, dispatch_service_pb2.PreflightResponse)
        return PreflightResult(response.ok, response.reason)

    async def resume(self, submission_id: str) -> int:
        """Items queued again; the dispatcher's FAILED_PRECONDITION passes through."""
        response = await _call(
            self._stub.ResumeDispatch(
                dispatch_service_pb2.ResumeDispatchRequest(submission_id=submission_id), timeout=10
            ),
            "resuming the dispatch",
        )
        assert isinstance(response, dispatch_service_pb2.ResumeDispatchResponse)
        return response.resumed_items
