"""QuarantineServicer: maintainers list, retry and drop quarantined events; proto <-> store."""

from __future__ import annotations

from typing import Any

import grpc

from medbench.ops.v1 import quarantine_service_pb2, quarantine_service_pb2_grpc
from medbench_messaging.publisher import Publisher
from medbench_runtime.auth import current_principal
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.timestamps import timestamp
from medbench_storage.quarantine import STATES, MongoQuarantine, NotQuarantined


def entry_to_proto(doc: dict[str, Any]) -> quarantine_service_pb2.QuarantinedEvent:
    return quarantine_service_pb2.QuarantinedEvent(
        entry_id=doc["_id"],
        service=doc.get("service", ""),
        source=doc.get("source", ""),
        origin=doc.get("origin", ""),
        topic=doc.get("topic", ""),
        key=doc.get("key", ""),
        reason=doc.get("reason", ""),
        size=doc.get("size", 0),
        status=doc.get("status", ""),
        times=doc.get("times", 0),
        first_at=timestamp(doc.get("first_at")),
        last_at=timestamp(doc.get("last_at")),
        resolved_by=doc.get("resolved_by", ""),
        resolved_at=timestamp(doc.get("resolved_at")),
    )


def _require_entry(entry_id: str) -> None:
    if not entry_id:
        raise InvalidArgument("entry_id is required")


class QuarantineServicer(quarantine_service_pb2_grpc.QuarantineServiceServicer):
    def __init__(self, quarantine: MongoQuarantine, publisher: Publisher) -> None:
        self._quarantine = quarantine
        self._publisher = publisher

    async def ListQuarantined(
        self,
        request: quarantine_service_pb2.ListQuarantinedRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.ListQuarantinedResponse:
        if request.status and request.status not in STATES:
            raise InvalidArgument(f"status must be one of {', '.join(STATES)} or empty")
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument("page_size must be between 0 and 1000")
        size = request.page_size or 100
        try:
            docs = await self._quarantine.list(
                request.status, request.service, size + 1, request.page_token
            )
        except ValueError:
            raise InvalidArgument("page_token is not one this API returned") from None
        more = len(docs) > size
        docs = docs[:size]
        return quarantine_service_pb2.ListQuarantinedResponse(
            events=[entry_to_proto(d) for d in docs],
            next_page_token=self._quarantine.page_token(docs[-1]) if more else "",
            held=await self._quarantine.held_count(),
        )

    async def RetryQuarantined(
        self,
        request: quarantine_service_pb2.QuarantinedEntryRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.QuarantinedEvent:
        _require_entry(request.entry_id)
        by = current_principal().key_id
        try:
            doc = await self._quarantine.retry(request.entry_id, by, self._publisher)
        except NotQuarantined:
            raise NotFound(f"no held quarantine entry {request.entry_id!r}") from None
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        return entry_to_proto(await self._quarantine.get(doc["_id"]))

    async def DropQuarantined(
        self,
        request: quarantine_service_pb2.QuarantinedEntryRequest,
        context: grpc.aio.ServicerContext,
    ) -> quarantine_service_pb2.QuarantinedEvent:
        _require_entry(request.entry_id)
        by = current_principal().key_id
        try:
            doc = await self._quarantine.drop(request.entry_id, by)
        except NotQuarantined:
            raise NotFound(f"no held quarantine entry {request.entry_id!r}") from None
        return entry_to_proto(await self._quarantine.get(doc["_id"]))
