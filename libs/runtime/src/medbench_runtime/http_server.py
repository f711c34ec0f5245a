"""A ThreadingHTTPServer run on a background thread: the website's and the review app's."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BackgroundHttpServer:
    """ThreadingHTTPServer on (host, port) with ``handler``; ``port`` 0 picks a free one.
    ``start`` serves on a daemon thread, ``serve_forever`` on the caller's."""

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> BackgroundHttpServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


__all__ = ["BackgroundHttpServer", "BaseHTTPRequestHandler"]
