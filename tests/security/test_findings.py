"""The penetration test's smaller findings (issue 19, part 5), each shown closed on real parts:
/metrics behind a bearer token, leaderboard-shown names normalised and checked for invisible
characters and look-alikes of other tenants' entries, partners' NOT_FOUND answers audited
within a budget, the website server's 400 for malformed paths, bank imports confined to
--images-dir with image bytes checked, and reflection on internal services behind a credential.

The stack is the six services as processes on the session's Kafka and Mongo-wire server; the
metrics, reflection and site servers are real HTTP and gRPC servers; grpcurl is the real one
(`make load-tools`); the import runs the real CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import statistics
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from medbench_site.publish import write_site
from medbench_site.server import MAX_PATH, SiteServer, malformed
from prometheus_client import REGISTRY

from aggregator.usecases.leaderboards import impersonated
from medbench.common.v1 import common_pb2
from medbench.identity.v1 import access_pb2, identity_service_pb2, identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2 as lb
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench.submission.v1 import submission_pb2, submission_service_pb2_grpc
from medbench.submission.v1 import submission_service_pb2 as ss
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_client.bank_files import answers_by_item, read_jsonl
from medbench_client.importers import image_path_problem
from medbench_devstack.ports import free_port
from medbench_devstack.services import ServiceStack
from medbench_runtime.auth import Authenticator, mint_key
from medbench_runtime.errors import InvalidArgument, NotFound
from medbench_runtime.images import image_type
from medbench_runtime.interceptors import STAFF_ROLES, RefusalBudget, RpcInterceptor
from medbench_runtime.introspection import REFLECTION_V1, HealthService, enable_reflection
from medbench_runtime.metrics import serve_metrics
from medbench_runtime.names import display_text, skeleton
from tests.conftest import Servers
from tests.e2e.conftest import running_stack
from tests.e2e.harness import Evaluation, load_pool, maintainer_cli, partner_client, partner_key

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}
BASELINE = answers_by_item(read_jsonl(BANK / "baseline_answers.jsonl"))
PNG_FILE = ROOT / "tests/data/pneumoniamnist/test_0001.png"
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
SERVICE_TOKEN = "s" * 40
INTERNAL = ["rotator", "dispatcher", "metric_scorer", "judge_scorer", "aggregator"]


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    with running_stack(servers, tmp_path_factory, "findings") as services:
        yield services


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    await load_pool(stack, ROWS, "findings-pool")
    return "findings-pool"


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# --- 1. /metrics behind a bearer token ------------------------------------------------------


def test_metrics_answer_only_the_bearer_token_and_stay_open_without_one() -> None:
    token = secrets.token_urlsafe(24)
    guarded = serve_metrics("127.0.0.1", free_port(), token)
    open_port = free_port()
    unguarded = serve_metrics("127.0.0.1", open_port, "")
    try:
        url = f"http://127.0.0.1:{guarded.server_address[1]}/metrics"
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
        ):
            status, answer, body = http_get(url, headers)
            assert status == 401, headers
            assert answer["WWW-Authenticate"] == 'Bearer realm="metrics"'
            assert b"medbench_" not in body and b"Bearer <metrics token>" in body
        for scheme in ("Bearer", "bearer"):
            status, _, body = http_get(url, {"Authorization": f"{scheme} {token}"})
            assert status == 200 and b"# TYPE medbench_grpc_server_handled_total counter" in body
        status, _, body = http_get(f"http://127.0.0.1:{open_port}/metrics")
        assert status == 200 and b"medbench_grpc_server_handled_total" in body
    finally:
        for server in (guarded, unguarded):
            server.shutdown()
            server.server_close()
    with pytest.raises(RuntimeError, match="MEDBENCH_METRICS_TOKEN is 8 characters"):
        serve_metrics("127.0.0.1", free_port(), "too-shrt")


async def test_every_services_metrics_need_the_stacks_token(stack: ServiceStack) -> None:
    for name in stack.names:
        assert stack.env(name)["MEDBENCH_METRICS_TOKEN"] == stack.metrics_token
        url = stack.metrics_url(name)
        status, _, body = await asyncio.to_thread(http_get, url)
        assert status == 401 and b"tenant" not in body, name
        wrong = {"Authorization": f"Bearer {stack.metrics_token[:-1]}"}
        assert (await asyncio.to_thread(http_get, url, wrong))[0] == 401, name
        text = await asyncio.to_thread(stack.scrape, name)
        assert "# TYPE medbench_grpc_server_handled_total counter" in text, name


# --- 2. leaderboard-shown names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("ＭｅｄＧＰＴ－７Ｂ", "MedGPT-7B"),
        ("Me\u0301dGPT", "MédGPT"),
        ("医生 👩\u200d⚕️", "医生 👩\u200d⚕️"),
        ("👍🏽 v2", "👍🏽 v2"),
        ("1\ufe0f\u20e3 model", "1\ufe0f\u20e3 model"),
        ("", ""),
    ],
)
def test_shown_names_are_kept_in_their_nfkc_form(value: str, shown: str) -> None:
    assert display_text("model.name", value, 200) == shown


HIDDEN = "contains an invisible or format character"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("GPT\u200b4", f"{HIDDEN} (U+200B ZERO WIDTH SPACE, at position 3)"),
        ("\ufeffGPT", f"{HIDDEN} (U+FEFF"),
        ("GPT\u2060", f"{HIDDEN} (U+2060 WORD JOINER"),
        ("GPT\u180e", f"{HIDDEN} (U+180E"),
        ("a\u2028b", f"{HIDDEN} (U+2028 LINE SEPARATOR"),
        ("a\u2029b", f"{HIDDEN} (U+2029 PARAGRAPH SEPARATOR"),
        ("GPT\U000e0041", f"{HIDDEN} (U+E0041 TAG LATIN CAPITAL"),
        ("\u3164", f"{HIDDEN} (U+3164 HANGUL FILLER"),
        ("GPT\u115f", f"{HIDDEN} (U+115F HANGUL CHOSEONG FILLER"),
        ("GPT\u1160", f"{HIDDEN} (U+1160 HANGUL JUNGSEONG FILLER"),
        ("GPT\uffa0", f"{HIDDEN} (U+FFA0 HALFWIDTH HANGUL FILLER"),
        ("\u2800", f"{HIDDEN} (U+2800 BRAILLE PATTERN BLANK"),
        ("GPT\u034f", f"{HIDDEN} (U+034F COMBINING GRAPHEME JOINER"),
        ("GPT\ue000", f"{HIDDEN} (U+E000"),
        ("\ufe0fGPT", f"{HIDDEN} (U+FE0F VARIATION SELECTOR-16"),
        ("医学\u200d模型", f"{HIDDEN} (U+200D ZERO WIDTH JOINER"),
        ("GPT\u200e", "contains bidirectional control characters"),
        ("GPT\u200f", "contains bidirectional control characters"),
        ("\u061cGPT", "contains bidirectional control characters"),
        ("   ", "shows nothing"),
        ("\u3000\u2003", "shows nothing"),
        ("\u0301\u0302", "shows nothing"),
    ],
)
def test_invisible_format_and_blank_names_are_refused_naming_the_field(
    value: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        display_text("model.name", value, 200)
    assert str(err.value).startswith(f"model.name {reason}"), str(err.value)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("GPT-4o", "GРТ-4о"),  # Cyrillic Р, Т, о
        ("Med-PaLM 2", "Меd-РаLМ 2"),  # Cyrillic М, е, Р, а
        ("MedGPT", "ＭｅｄＧＰＴ"),  # full width
        ("Llama 3", "IIama-3"),  # capital I for l
        ("Qwen2.5-72B", "qwen 2.5 72b"),  # case, spaces, punctuation
        ("ΗΕΡΑ", "HEPA"),  # Greek capitals
        ("Médecin", "Medecin"),  # an accent
        ("modern", "modem"),  # rn and m
        ("GPT-4o", "GPT-40"),  # o and 0
    ],
)
def test_look_alike_names_share_a_skeleton(a: str, b: str) -> None:
    assert skeleton(a) == skeleton(b) != ""


def test_different_names_have_different_skeletons_and_empty_ones_match_nothing() -> None:
    assert skeleton("GPT-4o") != skeleton("GPT-4")
    assert skeleton("医学大模型") != skeleton("医学小模型")
    assert skeleton("🩺📋") == ""
    names = {"model_name": "🩺📋", "organisation": ""}
    assert impersonated(names, [{"_id": "s", "model_name": "🧬", "organisation": ""}]) is None


def test_an_organisation_is_refused_only_when_it_looks_like_another_without_being_it() -> None:
    others = [{"_id": "sub_a", "model_name": "Alpha", "organisation": "Example Health"}]
    same = {"model_name": "Beta", "organisation": "example health"}
    assert impersonated(same, others) is None
    fake = {"model_name": "Beta", "organisation": "Ехаmple Health"}  # Cyrillic Е, х, а
    conflict = impersonated(fake, others)
    assert conflict is not None and conflict.startswith("model.organisation 'Ехаmple Health'")
    assert "(submission sub_a)" in conflict


async def evaluate(stack: ServiceStack, tenant: str, model: submission_pb2.ModelInfo) -> str:
    """A completed upload-mode submission of tenant for model."""
    evaluation = Evaluation(stack, tenant, f"{tenant}-run", BASELINE, questions=QUESTIONS)
    evaluation.model = model
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    await evaluation.wait_completed(timeout_s=180)
    return evaluation.submission_id


async def test_a_look_alike_of_another_tenants_published_name_is_refused_at_publication(
    stack: ServiceStack, pool: str
) -> None:
    original = await evaluate(
        stack,
        "names-original",
        submission_pb2.ModelInfo(name="Med-PaLM 2", organisation="Example Health"),
    )
    assert await partner_client(stack, "names-original").publish(original)
    cyrillic_name = "Меd-РаLМ 2"
    cyrillic_org = "Ехаmple Health"
    imitation, fake_org, same_org, same_model = await asyncio.gather(
        evaluate(stack, "names-imitator", submission_pb2.ModelInfo(name=cyrillic_name)),
        evaluate(
            stack,
            "names-fake-org",
            submission_pb2.ModelInfo(name="Beta-7B", organisation=cyrillic_org),
        ),
        evaluate(
            stack,
            "names-same-org",
            submission_pb2.ModelInfo(name="Gamma-7B", organisation="Example Health"),
        ),
        # Another institution evaluating the very same public model: shown on its own.
        evaluate(
            stack,
            "names-same-model",
            submission_pb2.ModelInfo(name="Med-PaLM 2", organisation="Other Hospital"),
        ),
    )
    code, details = await refused(partner_client(stack, "names-imitator").publish(imitation))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == (
        f"model.name {cyrillic_name!r} looks like 'Med-PaLM 2', the model of another tenant's "
        f"entry on the leaderboard (submission {original}), without being it; choose a name "
        "that cannot be mistaken for it"
    )
    code, details = await refused(partner_client(stack, "names-fake-org").publish(fake_org))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"model.organisation {cyrillic_org!r} looks like 'Example Health'")
    # Several tenants may belong to one organisation: the very same one is no imitation.
    assert await partner_client(stack, "names-same-org").publish(same_org)
    assert await partner_client(stack, "names-same-model").publish(same_model)
    # The owner publishes its own name again (a second run of one model is no imitation).
    assert await partner_client(stack, "names-original").publish(original)
    board = leaderboard_service_pb2_grpc.LeaderboardServiceStub(
        channel(stack.address("gateway"), partner_key(stack, "names-reader"))
    )
    listed = await board.ListLeaderboard(
        lb.ListLeaderboardRequest(track=common_pb2.TRACK_LLM, board=taskpool_pb2.BOARD_UPLOAD)
    )
    assert {(e.submission_id, e.model_name, e.organisation) for e in listed.entries} == {
        (original, "Med-PaLM 2", "Example Health"),
        (same_org, "Gamma-7B", "Example Health"),
        (same_model, "Med-PaLM 2", "Other Hospital"),
    }


# --- 3. partners' NOT_FOUND answers audited ---------------------------------------------------


async def audit_events(stack: ServiceStack, tenant: str) -> list[Any]:
    stub = identity_service_pb2_grpc.IdentityServiceStub(
        channel(stack.address("gateway"), stack.admin_key)
    )
    response = await stub.ListAuditEvents(
        identity_service_pb2.ListAuditEventsRequest(tenant_id=tenant, page_size=1000)
    )
    return list(response.events)


async def test_cross_tenant_probes_are_audited_alike_and_answered_alike(
    stack: ServiceStack, pool: str
) -> None:
    owner = partner_client(stack, "probe-owner")
    owned = (await owner.create("owned", "owner-model")).submission.submission_id
    assert (await owner.get(owned)).submission_id == owned
    prober = partner_client(stack, "probe-prober")
    await prober.create("own", "prober-model")  # the prober's key works for its own data
    elsewhere: list[float] = []
    nowhere: list[float] = []
    absent = [f"sub_{secrets.token_hex(12)}" for _ in range(15)]
    for missing in absent:  # interleaved, so load on the machine falls on both alike
        for target, times in ((owned, elsewhere), (missing, nowhere)):
            started = time.perf_counter()
            code, details = await refused(prober.get(target))
            times.append(time.perf_counter() - started)
            assert (code, details) == (grpc.StatusCode.NOT_FOUND, f"submission {target} not found")
    code, _ = await refused(prober.report(owned))
    assert code == grpc.StatusCode.NOT_FOUND
    slower, faster = sorted([statistics.median(elsewhere), statistics.median(nowhere)])[::-1]
    assert slower - faster <= 0.5 * slower + 0.01, (elsewhere, nowhere)

    events = await audit_events(stack, "probe-prober")
    probes = [e for e in events if e.method.endswith(("/GetSubmission", "/GetReport"))]
    assert {e.code for e in probes} == {"NOT_FOUND"}
    assert sorted(e.target for e in probes) == sorted(
        [f"submission_id={owned}"] * 16 + [f"submission_id={s}" for s in absent]
    )
    assert {(e.service, e.tenant_id, e.role) for e in probes} == {
        ("gateway", "probe-prober", access_pb2.ROLE_PARTNER_SUBMITTER)
    }
    # The owner's own reads answer OK and are not audited.
    own = await audit_events(stack, "probe-owner")
    assert not [e for e in own if e.method.endswith("/GetSubmission")]


class MemoryKeys:
    """A KeyStore of keys minted here."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    def add(self, tenant: str, role: int) -> str:
        key = mint_key()
        self.keys[key.key_id] = {
            "tenant_id": tenant,
            "role": role,
            "secret_hash": key.secret_hash,
            "revoked_at": None,
            "expires_at": None,
        }
        return key.secret

    async def find_key(self, key_id: str) -> dict[str, Any] | None:
        return self.keys.get(key_id)

    async def find_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return {"_id": tenant_id, "disabled": False}


class Events:
    """An audit sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def append(self, event: dict[str, Any]) -> None:
        self.events.append(event)


class Missing(submission_service_pb2_grpc.SubmissionServiceServicer):
    async def GetSubmission(
        self, request: ss.GetSubmissionRequest, context: grpc.aio.ServicerContext
    ) -> ss.GetSubmissionResponse:
        raise NotFound(f"submission {request.submission_id} not found")


class NoReports(report_service_pb2_grpc.ReportServiceServicer):
    async def GetReport(
        self, request: report_service_pb2.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> report_service_pb2.GetReportResponse:
        raise NotFound(f"no report for submission {request.submission_id}")


@pytest.fixture
async def probed() -> AsyncIterator[tuple[str, MemoryKeys, Events]]:
    """A real gRPC server whose GetSubmission answers NOT_FOUND; 3 audited probes per peer."""
    keys, events = MemoryKeys(), Events()
    interceptor = RpcInterceptor(
        "findings-probes",
        Authenticator(SERVICE_TOKEN, keys),
        events,
        probes=RefusalBudget(burst=3, per_s=0.0),
    )
    server = grpc.aio.server(interceptors=[interceptor])
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(Missing(), server)
    report_service_pb2_grpc.add_ReportServiceServicer_to_server(NoReports(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", keys, events
    finally:
        await server.stop(0)


async def test_probes_are_audited_within_a_budget_per_peer_and_the_rest_counted(
    probed: tuple[str, MemoryKeys, Events],
) -> None:
    address, keys, events = probed
    partner = keys.add("hospital-p", access_pb2.ROLE_PARTNER_VIEWER)
    maintainer = keys.add("platform", access_pb2.ROLE_MAINTAINER)
    metric = "medbench_grpc_probes_unaudited_total"
    before = REGISTRY.get_sample_value(metric, {"medbench_service": "findings-probes"}) or 0.0
    async with channel(address, partner) as chan:
        stub = submission_service_pb2_grpc.SubmissionServiceStub(chan)
        for i in range(8):
            request = ss.GetSubmissionRequest(submission_id=f"s{i}")
            assert (await refused(stub.GetSubmission(request)))[0] == grpc.StatusCode.NOT_FOUND
    # Staff and services look ids up for a living: their NOT_FOUND is no probe.
    for key in (maintainer, SERVICE_TOKEN):
        async with channel(address, key) as chan:
            stub = report_service_pb2_grpc.ReportServiceStub(chan)
            request = report_service_pb2.GetReportRequest(submission_id="staff")
            assert (await refused(stub.GetReport(request)))[0] == grpc.StatusCode.NOT_FOUND
    assert [(e["tenant_id"], e["code"], e["target"]) for e in events.events] == [
        ("hospital-p", "NOT_FOUND", f"submission_id=s{i}") for i in range(3)
    ]
    after = REGISTRY.get_sample_value(metric, {"medbench_service": "findings-probes"})
    assert after == before + 5


# --- 4. the website server and malformed paths ----------------------------------------------


def raw_request(port: int, method: str, path: str) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.0 request whose target goes on the wire as written (UTF-8):
    http.client refuses to send some of these."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: site\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


MALFORMED = [
    ("/%00", "encoded control character"),
    ("/index.html%00.png", "encoded control character"),
    ("/%0a", "encoded control character"),
    ("/%ff", "not UTF-8"),
    ("/%c0%af", "not UTF-8"),  # an overlong UTF-8 encoding of /
    ("/%zz", "invalid percent-encoding"),
    ("/%4", "invalid percent-encoding"),
    ("/../etc/passwd", ". or .. segment"),
    ("/%2e%2e/%2e%2e/etc/passwd", ". or .. segment"),
    ("/en/./index.html", ". or .. segment"),
    ("/%5c..%5cetc", "backslash"),
    ("/" + "a" * MAX_PATH, f"longer than {MAX_PATH}"),
    ("/caf\u00e9", "non-ASCII"),
    ("index.html", "must start with one /"),
]


@pytest.mark.parametrize(("path", "reason"), MALFORMED)
def test_malformed_paths_are_named(path: str, reason: str) -> None:
    found = malformed(path)
    assert found is not None and reason in found


def test_site_paths_that_name_files_are_well_formed() -> None:
    for path in ("/", "/index.html", "/en/board-llm-upload.html?x=%00", "/zh/%E6%A8%A1.html"):
        assert malformed(path) is None, path


def test_the_site_server_answers_400_to_malformed_paths_without_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_site(tmp_path, {"index.html": b"<!doctype html><title>ok</title>", "style.css": b""})
    server = SiteServer(tmp_path).start()
    try:
        for method in ("GET", "HEAD"):
            for path, reason in MALFORMED:
                status, body = raw_request(server.port, method, path)
                assert status == 400, (method, path)
                if method == "GET":
                    assert reason.encode() in body and b"etc/passwd" not in body, path
                else:
                    assert body == b""
        status, _, body = http_get(f"http://127.0.0.1:{server.port}/index.html")
        assert status == 200 and b"<title>ok</title>" in body
        assert http_get(f"http://127.0.0.1:{server.port}/missing.html")[0] == 404
    finally:
        server.stop()
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info]


# --- 5. bank imports confined to --images-dir -----------------------------------------------


def test_image_paths_that_leave_the_folder_are_refused_as_written() -> None:
    assert image_path_problem("img/ct1.png") is None
    assert image_path_problem("a..b.png") is None
    for path, reason in [
        ("../../x.png", "leaves the images folder"),
        ("img/../../x.png", "leaves the images folder"),
        ("img\\..\\..\\x.png", "leaves the images folder"),
        ("/etc/hostname", "is absolute"),
        ("C:\\x.png", "is absolute"),
        ("a\x00.png", "control character"),
    ]:
        found = image_path_problem(path)
        assert found is not None and reason in found, path


def test_images_are_told_by_their_magic_numbers() -> None:
    assert image_type(PNG_FILE.read_bytes()) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "image/jpeg"
    assert image_type(b"GIF89a\x01\x00") == "image/gif"
    assert image_type(b"RIFF\x24\x00\x00\x00WEBPVP8 ") == "image/webp"
    for content in (b"", b"hello, I am text\n", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x89PNG"):
        assert image_type(content) is None


async def test_import_reads_images_only_inside_the_folder_and_only_real_images(
    stack: ServiceStack, tmp_path: Path, servers: Servers
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "real.png").write_bytes(PNG_FILE.read_bytes())
    (images / "text.png").write_text("not an image, a text file\n")
    outside = tmp_path / "outside.png"  # an image, but outside the folder
    outside.write_bytes(PNG_FILE.read_bytes())
    (images / "link.png").symlink_to(outside)
    (images / "sub").mkdir()
    (images / "sub" / "up.png").symlink_to(Path("..") / ".." / "outside.png")
    paths = [
        "real.png",
        "text.png",
        "link.png",
        "sub/up.png",
        "../outside.png",
        str(outside),
        "absent.png",
    ]
    question = "这张CT最可能的诊断是 A. 正常 B. 肺炎"
    lines = [
        {"question": question, "answer": "", "other": {"id": i, "source": "MedClass_V4"}}
        | {"img_path": path}
        for i, path in enumerate(paths, 1)
    ]
    pool_file = tmp_path / "MedClass.jsonl"
    pool_file.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    stored_counts = []
    for allow in ((), ("--allow-missing-images",)):
        done = await asyncio.to_thread(
            maintainer_cli,
            stack,
            "import-medbench",
            str(pool_file),
            "--images-dir",
            str(images),
            *allow,
        )
        out = done.stdout
        stored_counts.append("1 images stored" in out)
        assert done.returncode == 1, (out, done.stderr)
        where = str(pool_file)
        assert f"{where}:2: img_path: image text.png is not a PNG, JPEG, GIF or WebP file" in out
        assert f"{where}:3: img_path: image link.png resolves outside {images}" in out
        assert f"{where}:4: img_path: image sub/up.png resolves outside {images}" in out
        assert f"'../outside.png' leaves the images folder (a .. segment): {where}:5" in out
        assert f"is absolute; paths are relative to the images folder: {where}:6" in out
        missing = f"{where}:7: img_path: image absent.png not found under {images}"
        assert (missing in out) == (not allow), out
    # The real image is stored by the first run; the second finds it stored.
    assert stored_counts == [True, False]
    # Only the real image reached the bank's image store, once.
    db = servers_db(servers, stack)
    stored = await db["images.files"].find({}, {"filename": 1, "metadata": 1}).to_list()
    assert [(f["filename"], f["metadata"]["media_type"]) for f in stored] == [
        ("real.png", "image/png")
    ]


def servers_db(servers: Servers, stack: ServiceStack) -> Any:
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(servers.mongo_uri)[stack.env("rotator")["MEDBENCH_MONGO__DATABASE"]]


async def test_the_rotator_refuses_bytes_that_are_not_an_image_naming_the_line(
    stack: ServiceStack,
) -> None:
    def item(n: int, content: bytes) -> taskpool_pb2.ImportItem:
        return taskpool_pb2.ImportItem(
            task=taskpool_pb2.Task(
                item_id=f"MedClass-blob-{n}",
                dataset="MedClass",
                question="这张CT最可能的诊断是 A. 正常 B. 肺炎",
                image_paths=[f"blob{n}.png"],
            ),
            images=[
                taskpool_pb2.ImageBlob(path=f"blob{n}.png", content=content, media_type="image/png")
            ],
            ref=f"blobs.jsonl:{n}",
        )

    async with channel(stack.address("rotator"), stack.admin_key) as chan:
        stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(chan)

        async def requests() -> AsyncIterator[taskpool_service_pb2.ImportTasksRequest]:
            yield taskpool_service_pb2.ImportTasksRequest(
                items=[item(1, b"#!/bin/sh\necho text\n"), item(2, b"GIF89a" + b"\x00" * 16)]
            )

        response = await stub.ImportTasks(requests())
    assert [(r.ref, r.field, r.reason) for r in response.rejected] == [
        (
            "blobs.jsonl:1",
            "images",
            "item MedClass-blob-1: image blob1.png is not a PNG, JPEG, GIF or WebP file (by its "
            "first bytes)",
        )
    ]
    assert response.imported == 1


# --- 6. reflection on internal services behind the service credential -----------------------


async def list_services(address: str, key: str | None) -> list[str]:
    api = REFLECTION_V1
    async with channel(address, key) as chan:
        call = api.stub(chan)(iter([api.request(list_services="")]), timeout=20)
        return [s.name async for r in call for s in r.list_services_response.service]


@pytest.fixture
async def reflected() -> AsyncIterator[tuple[str, str, MemoryKeys]]:
    """Two real gRPC servers: internal (reflection for staff) and public (open)."""
    keys = MemoryKeys()
    servers = []
    addresses = []
    for roles in (STAFF_ROLES, None):
        interceptor = RpcInterceptor(
            "findings-reflection", Authenticator(SERVICE_TOKEN, keys), reflection_roles=roles
        )
        server = grpc.aio.server(interceptors=[interceptor])
        health = HealthService()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        enable_reflection([health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
    try:
        yield addresses[0], addresses[1], keys
    finally:
        for server in servers:
            await server.stop(0)


async def test_internal_reflection_answers_staff_only_and_health_answers_anyone(
    reflected: tuple[str, str, MemoryKeys],
) -> None:
    internal, public, keys = reflected
    partner = keys.add("hospital-r", access_pb2.ROLE_PARTNER_SUBMITTER)
    code, details = await refused(list_services(internal, None))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "missing credentials" in details
    code, details = await refused(list_services(internal, partner))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == (
        "reflection on findings-reflection needs the service token or a staff key (maintainer, "
        "ops, reviewer); role partner_submitter may not call it"
    )
    for staff in (
        SERVICE_TOKEN,
        keys.add("platform", access_pb2.ROLE_MAINTAINER),
        keys.add("platform", access_pb2.ROLE_OPS),
        keys.add("platform", access_pb2.ROLE_REVIEWER),
    ):
        assert "grpc.health.v1.Health" in await list_services(internal, staff)
    for key in (None, partner):
        assert "grpc.health.v1.Health" in await list_services(public, key)
    async with grpc.aio.insecure_channel(internal) as chan:
        reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def grpcurl(address: str, *args: str, key: str | None = None) -> tuple[int, str]:
    """(exit status, stdout and stderr) of the real grpcurl."""
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: run `make load-tools`")
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        "-max-time",
        "20",
        *(["-H", f"authorization: Bearer {key}"] if key else []),
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    return proc.returncode or 0, out.decode()


async def test_grpcurl_reflection_on_the_stack_needs_a_key_except_on_the_gateway(
    stack: ServiceStack,
) -> None:
    partner = partner_key(stack, "reflection-partner")
    for name in INTERNAL:
        address = stack.address(name)
        status, out = await grpcurl(address, "list")
        assert status != 0 and "Unauthenticated" in out, (name, out)
        status, out = await grpcurl(address, "list", key=partner)
        assert status != 0 and "PermissionDenied" in out, (name, out)
        status, out = await grpcurl(address, "list", key=stack.service_token)
        assert status == 0 and "grpc.health.v1.Health" in out.split(), (name, out)
        async with grpc.aio.insecure_channel(address) as chan:
            reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    status, out = await grpcurl(stack.address("rotator"), "list", key=stack.admin_key)
    assert status == 0 and "medbench.taskpool.v1.TaskPoolService" in out.split()
    gateway = stack.address("gateway")
    for key in (partner, None):
        status, out = await grpcurl(gateway, "list", key=key)
        assert status == 0 and "medbench.submission.v1.SubmissionService" in out.split(), out
    status, out = await grpcurl(
        gateway, "describe", "medbench.submission.v1.SubmissionService.GetSubmission", key=partner
    )
    assert status == 0 and "rpc GetSubmission" in out, out


def test_the_nfkc_form_is_what_the_adversarial_suite_expects() -> None:
    # The stored form is NFKC, so NFC and NFD spellings of one name are one name.
    nfc = unicodedata.normalize("NFC", "Médecin-Ω")
    nfd = unicodedata.normalize("NFD", "Médecin-Ω")
    assert display_text("model.name", nfc, 200) == display_text("model.name", nfd, 200) == nfc
