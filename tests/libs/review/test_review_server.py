"""The review app's pieces: the ratings file reader, the pages, and the server's HTTP hygiene
(headers, cookies, CSRF, limits, gRPC status -> HTTP status) against a scripted JudgeService."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from concurrent import futures
from importlib import resources
from typing import Any

import grpc
import httpx
import pytest

from medbench.judge.v1 import judge_service_pb2 as pb
from medbench.judge.v1 import judge_service_pb2_grpc
from medbench_review import pages
from medbench_review.ratings_file import RatingsFileError, read_ratings
from medbench_review.server import RUBRICS, App, ReviewServer, http_status

REVIEWER = "mbk_00000000000000aa_" + "r" * 43
MAINTAINER = "mbk_00000000000000bb_" + "m" * 43
RUBRIC = {
    "id": "generic",
    "version": 1,
    "title": "通用",
    "description": "d",
    "scale": {"min": 0, "max": 3, "anchors": [{"score": 0, "description": "差"}]},
    "criteria": [
        {"name": "准确", "weight": 0.5, "description": "a"},
        {"name": "完整", "weight": 0.5, "description": "b"},
    ],
    "instructions": ["先看结论"],
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 24
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 16
GIF = b"GIF89a" + b"\0" * 24
HTML = b"<html><script>alert(1)</script></html>"
HELD, FOREIGN = "ab" * 12, "cd" * 12
# Images of the review HELD (claimed by the reviewer): id -> (media type the bank says, bytes).
PNG_ID, JPEG_ID, WEBP_ID, GIF_ID, HTML_ID, SVG_ID = (
    hashlib.sha256(b).hexdigest() for b in (PNG, JPEG, WEBP, GIF, HTML, b"<svg/>")
)
# Bytes that are not the image the id names (the app checks every image against its id).
DAMAGED_ID = "9" * 64
IMAGES = {
    PNG_ID: ("image/png", PNG),
    JPEG_ID: ("image/jpeg", JPEG),
    WEBP_ID: ("image/webp", WEBP),
    GIF_ID: ("image/gif", GIF),
    HTML_ID: ("image/png", HTML),
    SVG_ID: ("image/svg+xml", b"<svg/>"),
    DAMAGED_ID: ("image/png", PNG),
}
# The scripted service answers in ranges this small, so every image takes several replies.
RANGE_BYTES = 7


# -- the ratings file ---------------------------------------------------------------------


def test_a_csv_file_with_criterion_columns_and_both_key_point_forms() -> None:
    data = (
        "item_id,dataset,question,answer,score,rater_id,key_points,criterion:准确,criterion:完整\n"
        "i1,MedHC,问,答,3,dr-1,低盐|服药,2,3\n"
        'i2,MedHC,问,答,2,dr-1,"[""a|b"", ""c""]",,\n'
        "i3,MedHC,问,答,,dr-1,,,\n"
    ).encode()
    ratings, rows, errors = read_ratings("r.csv", data)
    assert rows == [1, 2]
    assert list(ratings[0].key_points) == ["低盐", "服药"]
    assert [(c.name, c.score) for c in ratings[0].criteria] == [("准确", 2), ("完整", 3)]
    assert list(ratings[1].key_points) == ["a|b", "c"] and not ratings[1].criteria
    assert [(e.row, e.field, e.reason) for e in errors] == [(3, "score", "is required")]


def test_a_jsonl_file_reports_each_unreadable_line_by_number() -> None:
    good = {"item_id": "i", "dataset": "MedHC", "question": "q", "answer": "a", "score": 2,
            "rater_id": "r", "criteria": {"准确": 1, "完整": 2}}  # fmt: skip
    lines = [
        json.dumps(good, ensure_ascii=False),
        "",
        "{not json",
        json.dumps({**good, "score": "many"}),
        json.dumps({**good, "tenant": "x"}),
        json.dumps({**good, "dataset": "", "rubric_id": ""}),
    ]
    ratings, rows, errors = read_ratings("r.jsonl", "\n".join(lines).encode())
    assert rows == [1] and ratings[0].criteria[1].score == 2
    assert [(e.row, e.field) for e in errors] == [
        (3, ""),
        (4, "score"),
        (5, "tenant"),
        (6, "dataset"),
    ]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("r.txt", b"x", "must end in .csv or .jsonl"),
        ("r.csv", b"\xff\xfe", "not UTF-8"),
        ("r.csv", b"item_id,model\n", "unknown column"),
        ("r.jsonl", b"\n\n", "no ratings"),
    ],
)
def test_a_file_that_cannot_be_read_says_why(name: str, data: bytes, message: str) -> None:
    with pytest.raises(RatingsFileError, match=message):
        read_ratings(name, data)


# -- pages ----------------------------------------------------------------------------------


def review(**fields: Any) -> pb.Review:
    base = dict(
        review_id="ab" * 12, state="claimed", dataset="MedHC", rubric_id="generic",
        rubric_version=1, question="问<题>", answer="<script>alert(1)</script>",
        key_points=["低盐"], rubric_json=json.dumps(RUBRIC, ensure_ascii=False),
    )  # fmt: skip
    return pb.Review(**{**base, **fields})


def test_the_review_form_has_a_labelled_radio_group_per_criterion_and_overall() -> None:
    _, body = pages.review_page("zh", "tok", review())
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert body.count("<fieldset") == 3 and body.count("<legend>") == 3
    assert len(re.findall(r'<label><input type="radio" name="c0" value="\d" required>', body)) == 4
    assert 'name="csrf" value="tok"' in body
    page = pages.layout("en", "T", body, "/review/x", "tok", "00000000000000aa")
    assert '<html lang="en">' in page and 'href="#main"' in page and 'id="main"' in page
    assert 'href="/lang/zh?next=/review/x"' in page


def test_a_review_of_an_image_item_shows_each_image_inline_with_alt_text_and_a_link() -> None:
    ids = ["1" * 64, "2" * 64]
    _, body = pages.review_page("zh", "tok", review(image_ids=ids))
    for n, image_id in enumerate(ids, 1):
        url = f"/review/{'ab' * 12}/image/{image_id}"
        assert f'<img src="{url}" alt="题目图像 {n}/2（编号 {image_id[:12]}）">' in body
        assert (
            f'<a id="open-image-{n}" href="{url}" target="_blank" rel="noopener">'
            f"打开原图 {n}（新窗口）</a>"
        ) in body
    assert body.index("题目图像</h2>") < body.index("参考答案</h2>")
    _, english = pages.review_page("en", "tok", review(image_ids=ids[:1]))
    assert f'alt="Image 1 of 1 of the item (id {ids[0][:12]})"' in english
    assert "Open image 1 full size" in english
    _, plain = pages.review_page("zh", "tok", review())
    assert "<img" not in plain and "题目图像" not in plain


# -- the server against a scripted judge scorer ----------------------------------------------


class ScriptedJudge(judge_service_pb2_grpc.JudgeServiceServicer):
    """Authenticates the two keys above; the reviewer may not import, as in the real policy."""

    def _role(self, context: grpc.ServicerContext) -> str:
        token = dict(context.invocation_metadata()).get("authorization", "")
        roles = {f"Bearer {REVIEWER}": "reviewer", f"Bearer {MAINTAINER}": "maintainer"}
        if token not in roles:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        return roles[token]

    def ListReviews(self, request: Any, context: grpc.ServicerContext) -> pb.ListReviewsResponse:
        self._role(context)
        return pb.ListReviewsResponse()

    def ImportRatings(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        if self._role(context) != "maintainer":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "role reviewer may not call it")
        return pb.ImportRatingsResponse(imported=sum(len(m.ratings) for m in request_iterator))

    def GetReviewImage(self, request: Any, context: grpc.ServicerContext) -> Any:
        """As the service decides: the reviewer holds HELD only; ids not of HELD are NOT_FOUND."""
        role = self._role(context)
        if request.review_id == FOREIGN and role == "reviewer":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the physician holding its claim")
        if request.review_id != HELD or request.image_id not in IMAGES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"review has no image {request.image_id}")
        media_type, content = IMAGES[request.image_id]
        part = content[request.offset : request.offset + RANGE_BYTES]
        return pb.ReviewImage(
            image_id=request.image_id, media_type=media_type, content=part, size=len(content)
        )

    def GetCalibration(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._role(context)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no judge (MEDBENCH_JUDGE__MODELS)")


@pytest.fixture(scope="module")
def judge_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    judge_service_pb2_grpc.add_JudgeServiceServicer_to_server(ScriptedJudge(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def http(judge_address: str) -> Iterator[httpx.Client]:
    server = ReviewServer(App(judge_address)).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield client
    finally:
        server.stop()


def sign_in(http: httpx.Client, key: str) -> httpx.Response:
    form = http.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    return http.post("/signin", data={"csrf": csrf.group(1), "key": key})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_pages_carry_strict_headers_and_cookies(http: httpx.Client) -> None:
    response = http.get("/signin")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "form-action 'self'" in csp and "http" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert 'lang="zh-CN"' in response.text and '<label for="key">' in response.text


def test_secure_cookies_when_served_over_tls(judge_address: str) -> None:
    server = ReviewServer(App(judge_address, secure_cookies=True)).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/signin")
        assert "Secure" in response.headers["set-cookie"]
    finally:
        server.stop()


def test_sign_in_checks_the_key_with_the_service_and_keeps_it_out_of_pages(
    http: httpx.Client,
) -> None:
    assert http.get("/").status_code == 303, "no session: to the sign-in page"
    assert http.post("/signin", data={"key": REVIEWER}).status_code == 403, "no CSRF token"
    wrong = sign_in(http, "mbk_0000000000000000_" + "x" * 43)
    assert wrong.status_code == 401 and "unknown API key" in wrong.text
    signed = sign_in(http, REVIEWER)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    session = signed.headers["set-cookie"]
    assert session.startswith("mbr_session=") and "HttpOnly" in session
    assert REVIEWER not in session and "r" * 43 not in session
    home = http.get("/")
    assert home.status_code == 200 and "r" * 43 not in home.text
    assert "00000000000000aa" in home.text


def test_posts_need_the_session_csrf_token_and_the_same_origin(http: httpx.Client) -> None:
    sign_in(http, REVIEWER)
    token = csrf_of(http.get("/").text)
    assert http.post("/claim", data={"csrf": "forged"}).status_code == 403
    foreign = http.post("/claim", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert http.post("/claim", data={"csrf": token}).status_code == 303


def test_limits_and_no_open_redirect(http: httpx.Client) -> None:
    assert http.post("/signin", content=b"x" * (65 * 1024)).status_code == 413
    assert http.get("/lang/en", params={"next": "//evil.example/"}).headers["location"] == "/"
    assert http.get("/lang/en", params={"next": "/import"}).headers["location"] == "/import"
    assert http.get("/nowhere").status_code == 404
    assert http.get("/review/..%2f").status_code in (303, 404)


def test_the_service_decides_who_opens_maintainer_pages(judge_address: str) -> None:
    for key, status in ((REVIEWER, 403), (MAINTAINER, 200)):
        server = ReviewServer(App(judge_address)).start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
                sign_in(http, key)
                page = http.get("/import")
                assert page.status_code == status
                if status == 403:
                    assert "may not call it" in page.text
                else:
                    token = csrf_of(page.text)
                    upload = http.post(
                        "/import",
                        data={"csrf": token},
                        files={"file": ("r.jsonl", b'{"item_id":"i","dataset":"d","question":'
                                b'"q","answer":"a","score":1,"rater_id":"r"}\n')},
                    )  # fmt: skip
                    assert upload.status_code == 200 and "1 imported" in upload.text.replace(
                        "新导入 1 条", "1 imported"
                    )
                    missing = http.get("/calibration/generic")
                    assert missing.status_code == 409 and "MEDBENCH_JUDGE__MODELS" in missing.text
        finally:
            server.stop()


def test_the_image_route_serves_png_jpeg_and_webp_only_with_strict_headers(
    http: httpx.Client,
) -> None:
    url = f"/review/{HELD}/image/"
    assert http.get(url + PNG_ID).status_code == 303, "no session: to the sign-in page"
    sign_in(http, REVIEWER)
    for image_id, media_type, content in (
        (PNG_ID, "image/png", PNG),
        (JPEG_ID, "image/jpeg", JPEG),
        (WEBP_ID, "image/webp", WEBP),
    ):
        # Read in ranges of RANGE_BYTES (5 replies for 32 bytes) and served whole.
        assert len(content) > 3 * RANGE_BYTES
        got = http.get(url + image_id)
        assert got.status_code == 200 and got.content == content
        assert got.headers["content-type"] == media_type
        assert got.headers["cache-control"] == "no-store"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "img-src 'self'" in got.headers["content-security-policy"]
    # A GIF, bytes that are not what the media type says, another type: refused, not served.
    for image_id in (GIF_ID, HTML_ID, SVG_ID):
        refused = http.get(url + image_id)
        assert refused.status_code == 415 and refused.headers["content-type"].startswith(
            "text/html"
        )
        assert GIF not in refused.content and b"<script>alert" not in refused.content
    # Bytes that do not hash to the id asked: not served.
    damaged = http.get(url + DAMAGED_ID)
    assert damaged.status_code == 502 and PNG not in damaged.content
    # The service's refusals: not the holder (403), an image not of the review (404).
    assert http.get(f"/review/{FOREIGN}/image/" + PNG_ID).status_code == 403
    assert http.get(url + "7" * 64).status_code == 404
    # Only a lowercase sha256 hex id is routed.
    for bad in ("1" * 63, "G" * 64, "1" * 64 + "/x", "../" + "1" * 61):
        assert http.get(url + bad).status_code == 404
    assert http.head(url + PNG_ID).headers["content-length"] == str(len(PNG))


def test_grpc_refusals_map_to_http_statuses() -> None:
    assert [
        http_status(c)
        for c in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.INTERNAL,
        )
    ] == [401, 403, 404, 409, 400, 503, 502]


def test_the_rubric_list_is_the_judge_scorers() -> None:
    folder = resources.files("judge_scorer.rubrics")
    ids = {p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith(".json")}
    assert set(RUBRICS) == ids
