"""A scripted OpenAI-compatible endpoint on loopback (real HTTP), standing in for a partner's
model server in tests and benchmarks."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a call gets: (status, body or None to drop the connection, headers).
Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Script:
    """Decides each reply; `answer` maps the last user message to the model's text."""

    answer: Callable[[str], str]
    """Maps the last user message to the reply (used unless `reply` is set)."""
    model: str = "test-model"
    api_key: str = "secret-key"
    latency_s: float = 0.0
    # Called before answering; may return a Reply to send instead (429s, 5xx, junk ...).
    fault: Callable[[str, int], Reply | None] = lambda question, attempt: None
    calls: Counter[str] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)
    """Arrival time (monotonic) of every completion request."""
    answered: Counter[str] = field(default_factory=Counter)
    inflight: int = 0
    max_inflight: int = 0
    """Most completion requests the endpoint was handling at once."""
    images: dict[str, list[str]] = field(default_factory=dict)
    """Image data URLs of the last request per question (content-part messages)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    reply: Callable[[list[dict[str, Any]]], str] | None = None
    """Maps the whole message list to the reply (for judges, whose repair turns matter)."""
    keep_bodies: bool = False
    bodies: list[dict[str, Any]] = field(default_factory=list)
    """Every completion request's JSON body, in arrival order (with keep_bodies only)."""


class _Server(ThreadingHTTPServer):
    # The default backlog (5) refuses bursts of concurrent connections.
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that went away mid-reply (a killed dispatcher) is expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeEndpoint:
    """ThreadingHTTPServer on 127.0.0.1:<free port>; base_url ends in /v1."""

    def __init__(self, script: Script) -> None:
        self.script = script
        handler = _handler(script)
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _split(content: Any) -> tuple[str, list[str]]:
    """A message's text and image URLs, from a plain string or OpenAI content parts."""
    if isinstance(content, str):
        return content, []
    text = "".join(p["text"] for p in content if p.get("type") == "text")
    return text, [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            self._finished()
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {script.api_key}":
                self._send(401, {"error": {"message": "invalid api key"}})
                return False
            return True

        def do_GET(self) -> None:
            if self._authorised():
                self._send(200, {"data": [{"id": script.model}]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self._authorised():
                return
            if body.get("model") != script.model:
                self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                return
            question, images = _split(body["messages"][-1]["content"])
            with script.lock:
                if images:
                    script.images[question] = images
                script.calls[question] += 1
                if script.keep_bodies:
                    script.bodies.append(body)
                script.times.append(time.monotonic())
                attempt = script.calls[question]
                script.inflight += 1
                script.max_inflight = max(script.max_inflight, script.inflight)
            self._counted = True
            try:
                self._complete(body, question, attempt)
            finally:
                self._finished()

        def _finished(self) -> None:
            """The request stops counting as in flight, before its reply leaves (the caller
            may send its next request the moment the reply arrives)."""
            if getattr(self, "_counted", False):
                self._counted = False
                with script.lock:
                    script.inflight -= 1

        def _complete(self, body: dict[str, Any], question: str, attempt: int) -> None:
            if script.latency_s:
                time.sleep(script.latency_s)
            fault = script.fault(question, attempt)
            if fault is not None:
                status, payload, headers = fault
                if payload is None:
                    self._finished()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._send(status, payload, headers)
                return
            with script.lock:
                script.answered[question] += 1
            self._send(
                200,
                {
                    "choices": [
                        {
                            "message": {
                                "role": "assistant",
                                "content": script.reply(body["messages"])
                                if script.reply is not None
                                else script.answer(question),
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": len(question), "completion_tokens": 3},
                },
            )

    return Handler
