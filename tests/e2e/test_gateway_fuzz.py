"""Property-based fuzzing of the public API against the running gateway: whatever the fields
hold, a request ends with a deliberate status (never INTERNAL or UNKNOWN) and the gateway stays
healthy. Derandomized, so every run tries the same examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medbench.identity.v1 import identity_pb2, identity_service_pb2
from medbench.identity.v1 import identity_service_pb2_grpc as identity_grpc
from medbench.submission.v1 import (
    submission_pb2,
    submission_service_pb2,
    submission_service_pb2_grpc,
)
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import partner_key

pytestmark = [pytest.mark.e2e]

CRASHES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Any Unicode text protobuf can carry (no lone surrogates), short and long, with the edge cases
# hypothesis favours: empty, NUL, combining marks, right-to-left, emoji, full-width forms.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
ids = st.one_of(text, st.from_regex(r"[A-Za-z0-9._:-]{1,140}", fullmatch=True))
enum_value = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def printable(value: str) -> list[str]:
    return [c for c in value if " " <= c <= "~"]


def outcome(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module")
def gateway(stack: ServiceStack) -> dict[str, Any]:
    chan = grpc.insecure_channel(stack.address("gateway"))
    key = partner_key(stack, "fuzz-t")
    yield {
        "submissions": submission_service_pb2_grpc.SubmissionServiceStub(chan),
        "identity": identity_grpc.IdentityServiceStub(chan),
        "partner": (("authorization", f"Bearer {key}"),),
        "admin": (("authorization", f"Bearer {stack.admin_key}"),),
        "health": health_pb2_grpc.HealthStub(chan),
    }
    chan.close()


@FUZZ
@given(
    request_id=ids,
    name=text,
    version=text,
    track=enum_value,
    mode=enum_value,
    base_url=text,
    model=text,
    concurrency=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    temperature=st.floats(allow_nan=True, allow_infinity=True),
    max_tokens=enum_value,
)
def test_create_submission_never_crashes(
    gateway: dict[str, Any],
    request_id: str,
    name: str,
    version: str,
    track: int,
    mode: int,
    base_url: str,
    model: str,
    concurrency: int,
    temperature: float,
    max_tokens: int,
) -> None:
    request = submission_service_pb2.CreateSubmissionRequest(
        request_id=request_id,
        model=submission_pb2.ModelInfo(name=name, version=version),
        track=track,
        mode=mode,
    )
    if base_url or model:
        request.endpoint.CopyFrom(
            submission_pb2.Endpoint(
                base_url=base_url,
                model=model,
                max_concurrency=concurrency,
                declared=submission_pb2.DecodingSettings(
                    temperature=temperature, max_tokens=max_tokens
                ),
            )
        )
    code = outcome(
        lambda: gateway["submissions"].CreateSubmission(
            request, metadata=gateway["partner"], timeout=30
        )
    )
    assert code not in CRASHES


@FUZZ
@given(
    submission_id=ids,
    batch_id=ids,
    answers=st.lists(st.tuples(ids, text), max_size=20),
    final=st.booleans(),
)
def test_upload_answers_never_crashes(
    gateway: dict[str, Any],
    submission_id: str,
    batch_id: str,
    answers: list[tuple[str, str]],
    final: bool,
) -> None:
    message = submission_service_pb2.UploadAnswersRequest(
        submission_id=submission_id,
        batch_id=batch_id,
        answers=[submission_pb2.Answer(item_id=i, answer=a) for i, a in answers],
        final=final,
    )
    code = outcome(
        lambda: gateway["submissions"].UploadAnswers(
            iter([message]), metadata=gateway["partner"], timeout=30
        )
    )
    assert code not in CRASHES


@FUZZ
@given(submission_id=ids, method=st.sampled_from(["GetSubmission", "GetReport"]))
def test_reads_never_crash(gateway: dict[str, Any], submission_id: str, method: str) -> None:
    request_cls = getattr(submission_service_pb2, f"{method}Request")
    code = outcome(
        lambda: getattr(gateway["submissions"], method)(
            request_cls(submission_id=submission_id), metadata=gateway["partner"], timeout=30
        )
    )
    assert code in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


@FUZZ
@given(
    page_size=enum_value,
    token=st.one_of(text, st.from_regex(r"[A-Za-z0-9_-]{1,80}", fullmatch=True)),
    states=st.lists(enum_value, max_size=4),
    track=enum_value,
    mode=enum_value,
    seconds=st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    nanos=enum_value,
)
def test_list_submissions_never_crashes(
    gateway: dict[str, Any],
    page_size: int,
    token: str,
    states: list[int],
    track: int,
    mode: int,
    seconds: int | None,
    nanos: int,
) -> None:
    request = submission_service_pb2.ListSubmissionsRequest(
        page_size=page_size, page_token=token, states=states, track=track, mode=mode
    )
    if seconds is not None:
        request.created_after.seconds, request.created_after.nanos = seconds, nanos
        request.created_before.seconds = seconds // 2
    code = outcome(
        lambda: gateway["submissions"].ListSubmissions(
            request, metadata=gateway["partner"], timeout=30
        )
    )
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


@FUZZ
@given(
    tenant_id=ids,
    display_name=text,
    per_day=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    role=enum_value,
    ttl=enum_value,
    token=text,
)
def test_identity_admin_never_crashes(
    gateway: dict[str, Any],
    tenant_id: str,
    display_name: str,
    per_day: int,
    role: int,
    ttl: int,
    token: str,
) -> None:
    admin, identity = gateway["admin"], gateway["identity"]
    calls = [
        lambda: identity.CreateTenant(
            identity_service_pb2.CreateTenantRequest(
                tenant_id=tenant_id,
                display_name=display_name,
                quotas=identity_pb2.Quotas(submissions_per_day=per_day),
            ),
            metadata=admin,
            timeout=30,
        ),
        lambda: identity.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(tenant_id=tenant_id, role=role, ttl_days=ttl),
            metadata=admin,
            timeout=30,
        ),
        lambda: identity.ListAuditEvents(
            identity_service_pb2.ListAuditEventsRequest(page_token=token, tenant_id=tenant_id),
            metadata=admin,
            timeout=30,
        ),
        lambda: identity.ListTenants(
            identity_service_pb2.ListTenantsRequest(page_token=token), metadata=admin, timeout=30
        ),
        # Whatever a caller puts in its credentials (printable ASCII: gRPC metadata cannot
        # carry more) is refused cleanly.
        lambda: identity.WhoAmI(
            identity_service_pb2.WhoAmIRequest(),
            metadata=(("authorization", f"Bearer {''.join(printable(token))}"),),
            timeout=30,
        ),
    ]
    for call in calls:
        assert outcome(call) not in CRASHES


def test_the_gateway_is_still_serving_after_the_fuzzing(
    gateway: dict[str, Any], stack: ServiceStack
) -> None:
    reply = gateway["health"].Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert stack.process("gateway").alive()
    assert "Traceback" not in stack.log_path("gateway").read_text()
