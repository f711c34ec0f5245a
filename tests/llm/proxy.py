"""A recording HTTP proxy on loopback in front of the real model server: what the judge scorer
sent (request bodies) and what the server answered (status, usage), for assertions."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Exchange:
    """One proxied request and its answer."""

    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    reply: dict[str, Any] | None


@dataclass
class Recorder:
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completions(self) -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.path.endswith("/chat/completions")]


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class RecordingProxy:
    """ThreadingHTTPServer on 127.0.0.1:<free port> forwarding to `upstream` (".../v1")."""

    def __init__(self, upstream: str, timeout_s: float = 600) -> None:
        target = urllib.parse.urlsplit(upstream)
        self.recorder = Recorder()
        recorder, host, port = self.recorder, target.hostname or "", target.port or 80

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type", "accept")
                }
                upstream_conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                try:
                    upstream_conn.request(self.command, self.path, raw or None, headers)
                    answer = upstream_conn.getresponse()
                    payload, status = answer.read(), answer.status
                    content_type = answer.getheader("Content-Type", "application/json")
                finally:
                    upstream_conn.close()
                with recorder.lock:
                    recorder.exchanges.append(
                        Exchange(self.command, self.path, _json(raw), status, _json(payload))
                    )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _forward
            do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{target.path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
