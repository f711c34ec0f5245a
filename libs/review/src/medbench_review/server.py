"""The review app's HTTP server (stdlib ThreadingHTTPServer), speaking gRPC to the judge scorer.

Authorization stays in the judge scorer: every call carries the signed-in user's own API key as
its bearer metadata (as the CLI's channels do), and a refusal becomes an error page with the
status it maps to (STATUS). The key lives only in a server-side session, found by an HttpOnly,
SameSite=Strict cookie (Secure when ``secure_cookies``); every POST carries the session's CSRF
token (the sign-in form a pre-session one, double-submitted) and a foreign Origin is refused.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any, TypeVar

import grpc

from medbench.judge.v1 import judge_service_pb2
from medbench_client.api import JudgeAdmin, channel
from medbench_review import pages
from medbench_review.ratings_file import RatingsFileError, read_ratings
from medbench_review.text import LANGS, t
from medbench_runtime.http_server import BackgroundHttpServer
from medbench_runtime.images import image_type

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
SESSION_COOKIE = "mbr_session"
PRE_COOKIE = "mbr_csrf"
LANG_COOKIE = "mbr_lang"
MAX_FORM = 64 * 1024
MAX_UPLOAD = 8 * 1024 * 1024
IDLE_S = 3600
ABSOLUTE_S = 12 * 3600
RPC_TIMEOUT_S = 60
KEY_ID = re.compile(r"^mbk_([0-9a-f]{16})_")
REVIEW_ID = re.compile(r"^[0-9a-f]{1,64}$")
# /review/<review id>/image/<bank content id: sha256 hex>
REVIEW_IMAGE = re.compile(r"^/review/([0-9a-f]{1,64})/image/([0-9a-f]{64})$")
# What a review page shows inline; another type (a GIF in the bank) is refused, never served.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
RUBRIC_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# gRPC status -> HTTP status of the error page.
STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
# The rubrics of the judge scorer (its rubrics/ folder; a test keeps the two equal).
RUBRICS = (
    "agent_planning",
    "agent_tool_use",
    "care_plan",
    "clinical_document",
    "clinical_reasoning",
    "dialogue_context",
    "generic",
    "imaging_multimodal",
    "popular_science",
    "psych_support",
    "quality_audit",
    "safety_refusal",
    "teaching_case",
)
R = TypeVar("R")


def http_status(code: grpc.StatusCode) -> int:
    return STATUS.get(code, 502)


def key_id(key: str) -> str:
    """The public id in an "mbk_<key_id>_<secret>" key (the physician's pseudonymous id)."""
    match = KEY_ID.match(key)
    return match.group(1) if match else ""


@dataclass
class Session:
    key: str
    who: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Signed-in users by an unguessable token; idle and absolute expiry; in memory only."""

    def __init__(self, idle_s: float = IDLE_S, absolute_s: float = ABSOLUTE_S) -> None:
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._idle_s, self._absolute_s = idle_s, absolute_s

    def create(self, key: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(key, key_id(key))
        with self._lock:
            self._expire()
            self._by_token[token] = session
        return token, session

    def get(self, token: str) -> Session | None:
        with self._lock:
            self._expire()
            session = self._by_token.get(token)
            if session is not None:
                session.seen = time.monotonic()
            return session

    def drop(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token, s in list(self._by_token.items()):
            if now - s.seen > self._idle_s or now - s.created > self._absolute_s:
                del self._by_token[token]


class Refused(Exception):
    """An error page: HTTP status and the detail to show."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class App:
    judge_scorer: str
    secure_cookies: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    rubrics: tuple[str, ...] = RUBRICS

    def call(self, key: str, work: Callable[[JudgeAdmin], Awaitable[R]]) -> R:
        """Runs work against the judge scorer with the user's key; RPC errors as Refused."""

        async def run() -> R:
            chan = channel(self.judge_scorer, key)
            try:
                return await asyncio.wait_for(work(JudgeAdmin(chan)), RPC_TIMEOUT_S)
            finally:
                await chan.close()

        try:
            return asyncio.run(run())
        except grpc.aio.AioRpcError as exc:
            raise Refused(http_status(exc.code()), exc.details() or exc.code().name) from exc
        except TimeoutError as exc:
            raise Refused(503, "the judge scorer did not answer in time") from exc


def _form(body: bytes) -> dict[str, str]:
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise Refused(400, "expected multipart/form-data")
    out: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        out[name] = (part.get_filename() or "", payload if isinstance(payload, bytes) else b"")
    return out


def _local(path: str) -> str:
    """path when it is a local absolute path of this app, else "/" (no open redirect)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


class Handler(BaseHTTPRequestHandler):
    server_version = "medbench-review"
    sys_version = ""
    timeout = 30
    app: App

    # -- plumbing --------------------------------------------------------------------------

    def _cookies(self) -> dict[str, str]:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
            return {}
        return {k: m.value for k, m in jar.items()}

    @property
    def lang(self) -> str:
        lang = self._cookies().get(LANG_COOKIE, "zh")
        return lang if lang in LANGS else "zh"

    def _cookie(
        self, name: str, value: str, max_age: int | None = None, http_only: bool = True
    ) -> str:
        parts = [f"{name}={value}", "Path=/", "SameSite=Strict"]
        if http_only:
            parts.append("HttpOnly")
        if self.app.secure_cookies:
            parts.append("Secure")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/html; charset=utf-8",
        cookies: tuple[str, ...] = (),
        location: str = "",
        cache: str = "no-store",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in HEADERS.items():
            self.send_header(name, value)
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        if location:
            self.send_header("Location", location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _page(
        self,
        title_body: tuple[str, str],
        status: int = 200,
        session: Session | None = None,
        cookies: tuple[str, ...] = (),
    ) -> None:
        title, body = title_body
        page = pages.layout(
            self.lang,
            title,
            body,
            self.path.split("?", 1)[0],
            session.csrf if session else "",
            session.who or "—" if session else "",
        )
        self._send(status, page.encode(), cookies=cookies)

    def _redirect(self, location: str, cookies: tuple[str, ...] = ()) -> None:
        self._send(303, b"", "text/plain; charset=utf-8", cookies, location)

    def _error(self, exc: Refused, session: Session | None) -> None:
        cookies: tuple[str, ...] = ()
        if exc.status == 401:
            token = self._cookies().get(SESSION_COOKIE, "")
            if token:
                self.app.sessions.drop(token)
            cookies = (self._cookie(SESSION_COOKIE, "", 0),)
            session = None
        self._page(
            pages.error_page(self.lang, exc.status, exc.detail), exc.status, session, cookies
        )

    def _session(self) -> Session:
        session = self.app.sessions.get(self._cookies().get(SESSION_COOKIE, ""))
        if session is None:
            raise _SignIn()
        return session

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Refused(411, "Content-Length is required")
        if int(length) > limit:
            raise Refused(413, f"at most {limit:,} bytes")
        return self.rfile.read(int(length))

    def _same_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            host = urllib.parse.urlsplit(origin).netloc
            if host != self.headers.get("Host", ""):
                raise Refused(403, "cross-origin form submission")

    def _check_csrf(self, session: Session, form: dict[str, str]) -> None:
        if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            raise Refused(403, t(self.lang, "csrf"))

    # -- dispatch ----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, handler: Callable[[str, dict[str, str]], None]) -> None:
        split = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
        session = None
        try:
            handler(split.path, query)
        except _SignIn:
            self._redirect("/signin")
        except Refused as exc:
            try:
                session = self._session()
            except _SignIn:
                session = None
            self._error(exc, session)
        except Exception:  # noqa: BLE001 - an error page, never a traceback
            log.exception("%s %s failed", self.command, split.path)
            self._error(Refused(500, ""), None)

    def _get(self, path: str, query: dict[str, str]) -> None:
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/style.css":
            css = resources.files("medbench_review").joinpath("style.css").read_bytes()
            self._send(200, css, "text/css; charset=utf-8", cache="public, max-age=300")
        elif path.startswith("/lang/"):
            lang = path.removeprefix("/lang/")
            if lang not in LANGS:
                raise Refused(404, "")
            cookie = self._cookie(LANG_COOKIE, lang, 365 * 86400)
            self._redirect(_local(query.get("next", "/")), (cookie,))
        elif path == "/signin":
            pre = secrets.token_urlsafe(32)
            self._page(pages.signin_page(self.lang, pre), cookies=(self._cookie(PRE_COOKIE, pre),))
        elif path == "/":
            self._queue(self._session())
        elif match := REVIEW_IMAGE.match(path):
            self._image(self._session(), match.group(1), match.group(2))
        elif path.startswith("/review/"):
            self._review(self._session(), _review_id(path))
        elif path == "/import":
            session = self._session()
            # The service decides: an empty import is PERMISSION_DENIED to all but maintainers.
            self.app.call(session.key, lambda j: j.import_ratings([]))
            self._page(pages.import_page(self.lang, session.csrf), session=session)
        elif path == "/calibration":
            session = self._session()
            self._page(pages.calibration_index_page(self.lang, self.app.rubrics), session=session)
        elif path == "/calibration/show":
            rubric = query.get("rubric", "")
            version = query.get("version", "0")
            self._redirect(f"/calibration/{_rubric_id(rubric)}?version={_version(version)}")
        elif path.startswith("/calibration/"):
            self._calibration(
                self._session(), _rubric_id(path.removeprefix("/calibration/")), query
            )
        else:
            raise Refused(404, "")

    def _post(self, path: str, query: dict[str, str]) -> None:
        self._same_origin()
        if path == "/import":
            session = self._session()
            content_type = self.headers.get("Content-Type", "")
            parts = _multipart(content_type, self._body(MAX_UPLOAD))
            if not hmac.compare_digest(
                parts.get("csrf", ("", b""))[1].decode("utf-8", "replace"), session.csrf
            ):
                raise Refused(403, t(self.lang, "csrf"))
            self._import(session, *parts.get("file", ("", b"")))
            return
        form = _form(self._body(MAX_FORM))
        if path == "/signin":
            self._signin(form)
            return
        session = self._session()
        self._check_csrf(session, form)
        if path == "/signout":
            self.app.sessions.drop(self._cookies().get(SESSION_COOKIE, ""))
            self._redirect("/signin", (self._cookie(SESSION_COOKIE, "", 0),))
        elif path == "/claim":
            self._claim(session)
        elif path.startswith("/review/"):
            self._submit(session, _review_id(path), form)
        elif path.startswith("/calibration/") and path.endswith("/measure"):
            rubric = _rubric_id(path.removeprefix("/calibration/").removesuffix("/measure"))
            version = _version(form.get("version", "0"))
            self.app.call(session.key, lambda j: j.calibrate(rubric, version))
            self._redirect(f"/calibration/{rubric}?version={version}")
        else:
            raise Refused(404, "")

    # -- pages -------------------------------------------------------------------------------

    def _signin(self, form: dict[str, str]) -> None:
        pre = self._cookies().get(PRE_COOKIE, "")
        if not pre or not hmac.compare_digest(form.get("csrf", ""), pre):
            raise Refused(403, t(self.lang, "csrf"))
        key = form.get("key", "").strip()
        if not key or len(key) > 200 or not key.isprintable():
            raise Refused(401, "no API key")
        # Any call the reviewer role may make checks the key: UNAUTHENTICATED for a wrong
        # one, PERMISSION_DENIED for a role that may not review.
        self.app.call(
            key, lambda j: j.stub.ListReviews(judge_service_pb2.ListReviewsRequest(page_size=1))
        )
        token, _ = self.app.sessions.create(key)
        self._redirect("/", (self._cookie(SESSION_COOKIE, token), self._cookie(PRE_COOKIE, "", 0)))

    def _open(self, session: Session) -> tuple[list[judge_service_pb2.Review], bool]:
        response = self.app.call(
            session.key,
            lambda j: j.stub.ListReviews(judge_service_pb2.ListReviewsRequest(page_size=100)),
        )
        return list(response.reviews), bool(response.next_page_token)

    def _mine(self, session: Session) -> list[judge_service_pb2.Review]:
        mine: list[judge_service_pb2.Review] = []
        token = ""
        for _ in range(20):
            response = self.app.call(
                session.key,
                lambda j, tok=token: j.stub.ListReviews(  # type: ignore[misc]
                    judge_service_pb2.ListReviewsRequest(
                        state="claimed", page_size=500, page_token=tok
                    )
                ),
            )
            now = time.time()
            mine += [
                r
                for r in response.reviews
                if r.reviewer_id == session.who and r.lease_until.seconds > now
            ]
            token = response.next_page_token
            if not token:
                break
        return mine

    def _queue(self, session: Session) -> None:
        open_reviews, more = self._open(session)
        self._page(
            pages.queue_page(self.lang, session.csrf, len(open_reviews), more, self._mine(session)),
            session=session,
        )

    def _claim(self, session: Session) -> None:
        open_reviews, _ = self._open(session)
        for review in open_reviews:
            try:
                claimed = self.app.call(session.key, _claimer(review.review_id, session.who))
            except Refused as exc:
                if exc.status == 409:  # taken by another physician a moment ago: the next
                    continue
                raise
            self._redirect(f"/review/{claimed.review_id}")
            return
        self._redirect("/")

    def _held(self, session: Session, review_id: str) -> judge_service_pb2.Review:
        for review in self._mine(session):
            if review.review_id == review_id:
                return review
        raise Refused(404, f"review {review_id} is not claimed by you (its lease may have expired)")

    def _review(self, session: Session, review_id: str) -> None:
        review = self._held(session, review_id)
        self._page(pages.review_page(self.lang, session.csrf, review), session=session)

    def _image(self, session: Session, review_id: str, image_id: str) -> None:
        """One of a review's images: the judge scorer decides who may see it (the physician
        holding the claim, or a maintainer) and hands over the bank's bytes; served only as
        PNG, JPEG or WebP, when the bytes are what the media type says."""

        async def fetch(judge: JudgeAdmin) -> tuple[bytes, str]:
            # In ranges (a reply carries at most 4 MiB): the largest image an import admits
            # does not fit one gRPC message.
            parts: list[bytes] = []
            offset, size, media_type = 0, -1, ""
            while size < 0 or offset < size:
                image = await judge.stub.GetReviewImage(
                    judge_service_pb2.GetReviewImageRequest(
                        review_id=review_id, image_id=image_id, offset=offset
                    )
                )
                if size < 0:
                    size, media_type = image.size, image.media_type
                if image.size != size or (not image.content and offset < size):
                    raise Refused(502, f"image {image_id[:12]}: its ranges do not add up")
                parts.append(image.content)
                offset += len(image.content)
            return b"".join(parts), media_type

        content, media_type = self.app.call(session.key, fetch)
        if hashlib.sha256(content).hexdigest() != image_id:
            raise Refused(502, f"image {image_id[:12]}: its bytes are not the image")
        if media_type not in IMAGE_TYPES or image_type(content) != media_type:
            raise Refused(415, f"image {image_id[:12]}: {media_type or 'no media type'} not shown")
        self._send(200, content, media_type)

    def _submit(self, session: Session, review_id: str, form: dict[str, str]) -> None:
        review = self._held(session, review_id)
        rubric = json.loads(review.rubric_json) if review.rubric_json else {}
        points = {str(p) for p in pages.scale_points(rubric)}
        criteria = rubric.get("criteria", [])
        missing = [c["name"] for i, c in enumerate(criteria) if form.get(f"c{i}") not in points]
        if form.get("overall") not in points:
            missing.append(t(self.lang, "overall"))
        if missing:
            self._page(
                pages.review_page(
                    self.lang,
                    session.csrf,
                    review,
                    form,
                    t(self.lang, "missing_score", names="、".join(missing)),
                ),
                status=400,
                session=session,
            )
            return
        request = judge_service_pb2.SubmitReviewRequest(
            review_id=review_id,
            reviewer_id=session.who,
            score=float(form["overall"]),
            criteria=[
                judge_service_pb2.CriterionScore(name=c["name"], score=float(form[f"c{i}"]))
                for i, c in enumerate(criteria)
            ],
        )
        self.app.call(session.key, lambda j: j.stub.SubmitReview(request))
        open_reviews, _ = self._open(session)
        self._page(
            pages.submitted_page(self.lang, session.csrf, bool(open_reviews)), session=session
        )

    def _import(self, session: Session, name: str, data: bytes) -> None:
        try:
            ratings, rows, unreadable = read_ratings(name, data)
        except RatingsFileError as exc:
            raise Refused(400, str(exc)) from exc
        response = self.app.call(session.key, lambda j: j.import_ratings(ratings))
        self._page(pages.import_result_page(self.lang, response, rows, unreadable), session=session)

    def _calibration(self, session: Session, rubric: str, query: dict[str, str]) -> None:
        version = _version(query.get("version", "0"))
        try:
            calibration = self.app.call(session.key, lambda j: j.calibration(rubric, version))
        except Refused as exc:
            if exc.status != 404:
                raise
            self._page(
                pages.no_calibration_page(self.lang, session.csrf, rubric, version, exc.detail),
                404,
                session,
            )
            return
        self._page(
            pages.calibration_page(self.lang, session.csrf, calibration, version), session=session
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.info("%s %s", self.address_string(), format % args)


def _claimer(
    review_id: str, reviewer_id: str
) -> Callable[[JudgeAdmin], Awaitable[judge_service_pb2.Review]]:
    return lambda j: j.claim(review_id, reviewer_id)


class _SignIn(Exception):
    """No (live) session: to the sign-in page."""


def _review_id(path: str) -> str:
    review_id = path.removeprefix("/review/")
    if not REVIEW_ID.match(review_id):
        raise Refused(404, "")
    return review_id


def _rubric_id(rubric: str) -> str:
    if not RUBRIC_ID.match(rubric):
        raise Refused(400, "a rubric id is lower_snake_case")
    return rubric


def _version(value: str) -> int:
    if not value.isdigit() or int(value) > 10_000:
        raise Refused(400, "a rubric version is a whole number")
    return int(value)


class ReviewServer(BackgroundHttpServer):
    """The review app on (host, port); ``port`` 0 picks a free one."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(type("BoundHandler", (Handler,), {"app": app}), host, port)
