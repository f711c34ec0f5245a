"""A small static server for a built site folder (local stack and the chart's site pod).

Read-only: GET and HEAD of files under the current build; no directory listings; strict
security headers (the pages need nothing but their own stylesheet). ``/healthz`` answers 200
once a build exists and 503 before. A malformed path (longer than MAX_PATH, not printable ASCII,
invalid percent-encoding, escapes that are not UTF-8 or decode to a control character such as
NUL, a backslash, `.` or `..` segments) is answered 400 before any file is looked up. Any other
static web server can serve the folder instead.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import urllib.parse
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from medbench_runtime.http_server import BackgroundHttpServer
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
MAX_PATH = 1024
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def malformed(target: str) -> str | None:
    """Why a request target is not a path this server answers (None when it is one)."""
    if len(target) > MAX_PATH:
        return f"the path is longer than {MAX_PATH} characters"
    if any(not "!" <= c <= "~" for c in target):
        return "the path holds a space, a control or a non-ASCII character"
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or path.startswith("//"):
        return "the path must start with one /"
    if _BAD_ESCAPE.search(path):
        return "the path holds an invalid percent-encoding"
    try:
        decoded = urllib.parse.unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return "the path's percent-encoded bytes are not UTF-8"
    if any(unicodedata.category(c) == "Cc" for c in decoded):
        return "the path holds an encoded control character"
    if "\\" in decoded:
        return "the path holds a backslash"
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return "the path holds a . or .. segment"
    return None


class SiteHandler(SimpleHTTPRequestHandler):
    """Serves the build the site link points at when the request arrives."""

    server_version = "medbench-site"
    sys_version = ""

    def __init__(self, *args: Any, out: Path, **kwargs: Any) -> None:
        self._out = out
        super().__init__(*args, directory=str((out / LINK).resolve()), **kwargs)

    def do_HEAD(self) -> None:
        if not self._refused():
            super().do_HEAD()

    def do_GET(self) -> None:
        if self._refused():
            return
        if self.path.split("?", 1)[0] == "/healthz":
            built = (self._out / LINK).exists()
            self._plain(HTTPStatus.OK if built else HTTPStatus.SERVICE_UNAVAILABLE)
            return
        if not (self._out / LINK).exists():
            self._plain(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        super().do_GET()

    def _refused(self) -> bool:
        """Answers 400 to a malformed path (True), saying why but not echoing it."""
        reason = malformed(self.path)
        if reason is None:
            return False
        log.info("%s: 400 for a malformed path: %s", self.address_string(), reason)
        self._plain(HTTPStatus.BAD_REQUEST, reason)
        return True

    def send_head(self) -> Any:
        try:
            return super().send_head()
        except ValueError:  # anything the checks above let through: a 400, never a traceback
            self._plain(HTTPStatus.BAD_REQUEST, "the path cannot name a file")
            return None

    def _plain(self, status: HTTPStatus, detail: str = "") -> None:
        body = f"{status.value} {status.phrase}{': ' + detail if detail else ''}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
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


class SiteServer(BackgroundHttpServer):
    """Serves ``out/site`` on (host, port); ``port`` 0 picks a free one."""

    def __init__(self, out: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(partial(SiteHandler, out=out), host, port)
