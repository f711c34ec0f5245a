"""OpenTelemetry tracing: one connected trace per evaluation across gRPC calls, Kafka hops and
MongoDB commands. Off by default (the API's no-op tracer); on with MEDBENCH_TRACING__FILE (JSON
lines, one file per service in a folder) or MEDBENCH_TRACING__OTLP_ENDPOINT (needs the
opentelemetry-exporter-otlp-proto-grpc package in the image).

Context travels as W3C `traceparent` in gRPC metadata (medbench_runtime.bearer injects it),
in Kafka headers (the publisher injects it; the outbox stores it with each event so the relay
sends the context of the transaction that wrote the event), and is extracted by the server
interceptor and the Kafka consumer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from pydantic import BaseModel

TRACER = "medbench"


class TracingSettings(BaseModel):
    """Where spans go; nothing is recorded unless one of file or otlp_endpoint is set."""

    # A folder: each service appends its spans to <folder>/<service>.jsonl.
    file: str = ""
    # An OTLP/gRPC collector, e.g. "http://otel-collector:4317".
    otlp_endpoint: str = ""
    # Share of new traces recorded (a call that carries a sampled context is always recorded).
    sample_ratio: float = 1.0


class JsonLinesExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(s), ensure_ascii=False) + "\n" for s in spans]
        with self._lock:
            self._file.writelines(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "service": span.resource.attributes.get("service.name", ""),
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else "",
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: v for k, v in (span.attributes or {}).items()},
    }


_ENABLED = False


def tracing_enabled() -> bool:
    """Whether setup_tracing installed a provider in this process."""
    return _ENABLED


def setup_tracing(service: str, settings: TracingSettings) -> bool:
    """Installs the tracer provider; False when tracing is off."""
    if not (settings.file or settings.otlp_endpoint):
        return False
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.file:
        exporter = JsonLinesExporter(Path(settings.file) / f"{service}.jsonl")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if settings.otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "MEDBENCH_TRACING__OTLP_ENDPOINT needs the opentelemetry-exporter-otlp-proto-grpc "
                "package"
            ) from exc
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    trace.set_tracer_provider(provider)
    global _ENABLED
    _ENABLED = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def trace_headers() -> list[tuple[str, str]]:
    """The current context as W3C headers (empty when no span is being recorded)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def context_from(pairs: Any) -> otel_context.Context:
    """The context carried by metadata or Kafka headers ((key, str or bytes) pairs)."""
    carrier: dict[str, str] = {}
    for key, value in pairs or ():
        if key in ("traceparent", "tracestate"):
            carrier[key] = (
                value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            )
    return propagate.extract(carrier)


@contextmanager
def span(
    name: str,
    kind: trace.SpanKind,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    with tracer().start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current
