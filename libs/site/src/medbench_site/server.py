"""A small static server for a built site folder (local stack and the chart's site pod).

Read-only: GET and HEAD of files under the current build; no directory listings; strict
security headers (the pages need nothing but their own stylesheet). ``/healthz`` answers 200
once a build exists and 503 before. Any other static web server can serve the folder instead.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medbench_site.publish import LINK

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "public, max-age=60",
}


class SiteHandler(SimpleHTTPRequestHandler):
    """Serves the build the site link points at when the request arrives."""

    server_version = "medbench-site"
    sys_version = ""

    def __init__(self, *args: Any, out: Path, **kwargs: Any) -> None:
        self._out = out
        super().__init__(*args, directory=str((out / LINK).resolve()), **kwargs)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            built = (self._out / LINK).exists()
            self._plain(HTTPStatus.OK if built else HTTPStatus.SERVICE_UNAVAILABLE)
            return
        if not (self._out / LINK).exists():
            self._plain(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        super().do_GET()

    def _plain(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def list_directory(self, path: str) -> None:  # type: ignore[override]
        self.send_error(HTTPStatus.NOT_FOUND, "Not found")
        return None

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)


class SiteServer:
    """ThreadingHTTPServer on (host, port) serving ``out/site``; ``port`` 0 picks a free one."""

    def __init__(self, out: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer((host, port), partial(SiteHandler, out=out))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> SiteServer:
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
