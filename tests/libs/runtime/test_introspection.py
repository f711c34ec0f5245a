"""Server reflection (v1 and v1alpha) and Health/List on a server started by run_service, read
by the real grpcurl (`make load-tools` puts it in .tools/bin) and by the Python stubs. The server
is an internal one: reflection answers the service token (tests/security/test_findings.py shows
it refusing callers without one, and the gateway's open reflection)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from medbench.dispatch.v1 import dispatch_service_pb2
from medbench.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from medbench.report.v1 import report_service_pb2, report_service_pb2_grpc
from medbench_devstack.ports import free_port
from medbench_runtime.auth import Authenticator
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.interceptors import RpcInterceptor
from medbench_runtime.introspection import (
    HEALTH_SERVICE,
    MAX_LISTED,
    REFLECTION_APIS,
    REFLECTION_V1,
    REFLECTION_V1ALPHA,
    HealthService,
    ReflectionApi,
)
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_runtime.settings import AuthSettings, ServiceSettings

GRPCURL = Path(__file__).resolve().parents[3] / ".tools" / "bin" / "grpcurl"
REPORT = report_service_pb2.DESCRIPTOR.services_by_name["ReportService"]
IDENTITY = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"]
SERVED = [REPORT.full_name, IDENTITY.full_name]
EVERY_SERVICE = sorted([*SERVED, HEALTH_SERVICE, *(api.service for api in REFLECTION_APIS)])
WAIT_S = 20
SERVICE_TOKEN = "t" * 40


@pytest.fixture(scope="module")
async def address() -> AsyncIterator[str]:
    settings = ServiceSettings(
        service_name="t",
        grpc_port=free_port(),
        metrics_port=free_port(),
        shutdown_grace_s=2,
        auth=AuthSettings(service_token=SERVICE_TOKEN),
    )
    runtime = ServiceRuntime(
        servicers=[
            Servicer(
                report_service_pb2_grpc.add_ReportServiceServicer_to_server,
                report_service_pb2_grpc.ReportServiceServicer(),
                REPORT.full_name,
            ),
            Servicer(
                identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,
                identity_service_pb2_grpc.IdentityServiceServicer(),
                IDENTITY.full_name,
            ),
        ]
    )
    task = asyncio.create_task(run_service(settings, runtime))
    address = f"127.0.0.1:{settings.grpc_port}"
    try:
        # Watch answers once the server is up; SERVING once run_service is ready.
        async with grpc.aio.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S, wait_for_ready=True
            )
            async for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    watch.cancel()
                    break
        yield address
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, WAIT_S)


async def grpcurl(
    address: str, *args: str, data: Any = None, ok: bool = True, token: str | None = SERVICE_TOKEN
) -> str:
    """The output of `grpcurl address args...` (stdout; stderr when it fails, as ok=False
    expects); data, when given, is the request as JSON; token goes with every call, reflection's
    included (None: no credentials)."""
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: run `make load-tools`")
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        "-max-time",
        str(WAIT_S),
        *(["-H", f"authorization: Bearer {token}"] if token else []),
        *(["-d", json.dumps(data)] if data is not None else []),
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S + 10)
    assert (proc.returncode == 0) == ok, (args, out.decode(), err.decode())
    return (out if ok else err).decode()


async def test_grpcurl_lists_every_service_and_every_method(address: str) -> None:
    assert (await grpcurl(address, "list")).split() == EVERY_SERVICE
    for service in (REPORT, IDENTITY):
        listed = (await grpcurl(address, "list", service.full_name)).split()
        assert listed == sorted(m.full_name for m in service.methods)


async def test_grpcurl_describes_every_method_by_its_symbol(address: str) -> None:
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    methods = [m.full_name for service in (REPORT, IDENTITY, health) for m in service.methods]
    methods += [f"{api.service}.ServerReflectionInfo" for api in REFLECTION_APIS]
    described = dict(
        zip(
            methods,
            await asyncio.gather(*(grpcurl(address, "describe", m) for m in methods)),
            strict=True,
        )
    )
    for name, text in described.items():
        assert text.startswith(f"{name} is a method:\nrpc {name.rpartition('.')[2]} ("), text
    assert (
        "rpc Check ( .grpc.health.v1.HealthCheckRequest ) returns "
        "( .grpc.health.v1.HealthCheckResponse );" in described["grpc.health.v1.Health.Check"]
    )
    # Method options, an extension defined in an imported file, come out resolved.
    who = described[IDENTITY.methods_by_name["WhoAmI"].full_name]
    assert "option (.medbench.identity.v1.access)" in who and "ROLE_PARTNER_VIEWER" in who


async def test_grpcurl_describes_messages_nested_types_and_enum_values(address: str) -> None:
    text = await grpcurl(address, "describe", "grpc.health.v1.HealthCheckResponse")
    assert text.startswith("grpc.health.v1.HealthCheckResponse is a message:")
    assert "ServingStatus status = 1;" in text and "SERVING = 1;" in text
    nested = await grpcurl(address, "describe", "grpc.health.v1.HealthCheckResponse.ServingStatus")
    assert nested.startswith("grpc.health.v1.HealthCheckResponse.ServingStatus is an enum:")
    value = await grpcurl(address, "describe", "medbench.identity.v1.Role.ROLE_OPS")
    assert "is an enum value" in value and "ROLE_OPS = 4;" in value
    # A type of an imported file only (report.proto is imported by report_service.proto).
    request = report_service_pb2.GetReportResponse.DESCRIPTOR.full_name
    assert "is a message:" in await grpcurl(address, "describe", request)
    unknown = await grpcurl(address, "describe", "medbench.nothing.v1.Nothing", ok=False)
    assert "Symbol not found" in unknown


async def test_grpcurl_calls_health_check_and_list_by_reflection(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    check = await grpcurl(
        address, "grpc.health.v1.Health/Check", data={"service": REPORT.full_name}
    )
    assert json.loads(check) == {"status": "SERVING"}
    listed = json.loads(await grpcurl(address, "grpc.health.v1.Health/List"))
    assert listed == {"statuses": {n: {"status": "SERVING"} for n in ["", *SERVED]}}
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def file_names(response: Any) -> list[str]:
    files = response.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files]


def not_found(response: Any) -> bool:
    error = response.error_response
    return response.HasField("error_response") and (
        error.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    )


async def reflect(
    address: str, api: ReflectionApi, requests: Sequence[Any], token: str | None = SERVICE_TOKEN
) -> list[Any]:
    """The answers to requests, all on one stream of the api's version (with token)."""
    async with authorized_channel(address, token) as channel:
        if api is REFLECTION_V1ALPHA:  # grpcio-reflection's own stub
            stream = v1alpha_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        else:
            stream = api.stub(channel)
        call = stream(iter(requests), timeout=WAIT_S)
        return [response async for response in call]


@pytest.mark.parametrize("api", REFLECTION_APIS, ids=lambda api: api.service)
async def test_reflection_resolves_symbols_and_answers_not_found_in_band(
    address: str, api: ReflectionApi
) -> None:
    ask = api.request
    method = REPORT.methods_by_name["GetReport"].full_name
    requests = [
        ask(host="h1", file_containing_symbol=method),
        ask(file_containing_symbol="medbench.report.v1.ReportService.NoSuchMethod"),
        ask(file_containing_symbol="medbench.nothing.v1.Nothing"),
        ask(list_services=""),
        ask(file_containing_symbol="grpc.health.v1.HealthCheckResponse.SERVING"),
        ask(file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING"),
        ask(file_containing_symbol="grpc.health.v1.HealthCheckRequest.service"),
        ask(file_containing_symbol="medbench.identity.v1.access"),
        ask(file_by_filename="medbench/identity/v1/access.proto"),
        ask(file_by_filename="medbench/nothing.proto"),
        # Imported by this process (the test), but not part of what the server serves.
        ask(file_by_filename=dispatch_service_pb2.DESCRIPTOR.name),
        ask(file_containing_extension={"containing_type": "google.protobuf.MethodOptions"}),
        ask(
            file_containing_extension={
                "containing_type": "google.protobuf.MethodOptions",
                "extension_number": 51001,
            }
        ),
        ask(all_extension_numbers_of_type="google.protobuf.MethodOptions"),
        ask(all_extension_numbers_of_type="medbench.nothing.v1.Nothing"),
        ask(),
    ]
    answers = await reflect(address, api, requests)
    assert len(answers) == len(requests)
    for request, answer in zip(requests, answers, strict=True):
        assert answer.original_request == request and answer.valid_host == request.host
    (
        by_method,
        no_method,
        no_type,
        services,
        enum_value,
        value_in_enum,
        field,
        extension,
        by_name,
        no_file,
        not_served,
        no_extension,
        by_extension,
        numbers,
        no_numbers,
        empty,
    ) = answers
    # The requested file first, then everything it imports, each once.
    names = file_names(by_method)
    assert names[0] == "medbench/report/v1/report_service.proto"
    assert {
        "medbench/report/v1/report.proto",
        "medbench/identity/v1/access.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
    } <= set(names)
    assert len(names) == len(set(names))
    assert all(not_found(a) for a in (no_method, no_type, no_file, not_served, no_extension))
    assert all(not_found(a) for a in (no_numbers,))
    assert "nothing" in no_type.error_response.error_message
    assert [s.name for s in services.list_services_response.service] == EVERY_SERVICE
    for answer in (enum_value, value_in_enum, field):
        assert file_names(answer) == ["grpc_health/v1/health.proto"]
    access = ["medbench/identity/v1/access.proto", "google/protobuf/descriptor.proto"]
    assert file_names(extension) == file_names(by_name) == file_names(by_extension) == access
    assert numbers.all_extension_numbers_response.base_type_name == "google.protobuf.MethodOptions"
    assert list(numbers.all_extension_numbers_response.extension_number) == [51001]
    assert empty.error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_each_version_describes_both_reflection_services(address: str) -> None:
    for api in REFLECTION_APIS:
        answers = await reflect(
            address,
            api,
            [api.request(file_containing_symbol=a.service) for a in REFLECTION_APIS],
        )
        v1, v1alpha = (file_names(a) for a in answers)
        assert v1 == [REFLECTION_V1.request.DESCRIPTOR.file.name]
        assert v1alpha == [REFLECTION_V1ALPHA.request.DESCRIPTOR.file.name]
    assert REFLECTION_V1.service == "grpc.reflection.v1.ServerReflection"
    assert REFLECTION_V1ALPHA.service == "grpc.reflection.v1alpha.ServerReflection"


async def test_health_watch_and_list_through_the_interceptor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    checks = HealthService()
    server = grpc.aio.server(interceptors=[RpcInterceptor("t", Authenticator("s" * 40, None))])
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    status = health_pb2.HealthCheckResponse
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await checks.set("a", status.NOT_SERVING)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="a"), timeout=WAIT_S)
            assert (await watch.read()).status == status.NOT_SERVING
            await checks.set("a", status.SERVING)
            assert (await watch.read()).status == status.SERVING
            watch.cancel()
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="b"), timeout=WAIT_S)
            assert (await unknown.read()).status == status.SERVICE_UNKNOWN
            unknown.cancel()
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=WAIT_S)
            assert {k: v.status for k, v in listed.statuses.items()} == {
                "": status.SERVING,
                "a": status.SERVING,
            }
            for i in range(MAX_LISTED):
                await checks.set(f"s{i}", status.SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.List(health_pb2.HealthListRequest(), timeout=WAIT_S)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
