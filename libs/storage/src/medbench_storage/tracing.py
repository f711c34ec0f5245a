"""MongoDB command spans (OpenTelemetry) for every client the services open."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from pymongo import monitoring

from medbench_runtime.tracing import tracer


class MongoCommandSpans(monitoring.CommandListener):
    """A span per MongoDB command issued inside a recorded span (background polling alone is
    not traced)."""

    def __init__(self) -> None:
        self._open: dict[tuple[int, Any], trace.Span] = {}

    def started(self, event: Any) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return
        started = tracer().start_span(
            f"mongodb {event.command_name}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system": "mongodb",
                "db.name": event.database_name,
                "db.operation": event.command_name,
            },
        )
        self._open[(event.request_id, event.connection_id)] = started

    def _end(self, event: Any, ok: bool) -> None:
        opened = self._open.pop((event.request_id, event.connection_id), None)
        if opened is not None:
            if not ok:
                opened.set_status(trace.Status(trace.StatusCode.ERROR))
            opened.end()

    def succeeded(self, event: Any) -> None:
        self._end(event, True)

    def failed(self, event: Any) -> None:
        self._end(event, False)
