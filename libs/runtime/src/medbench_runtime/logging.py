"""JSON-lines logging to stdout with context fields bound through contextvars."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Never mutated in place: bind() always sets a new dict, so the shared default is safe.
_EMPTY: dict[str, Any] = {}
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context")


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Adds fields (e.g. submission_id) to every log line written inside the block."""
    token = _context.set({**_context.get(_EMPTY), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; stable keys first."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_context.get(_EMPTY))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Sends every logger's records to stdout as JSON; call once per process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connection and rebalance step).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # httpx logs every request at INFO; the dispatcher counts them in metrics instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
