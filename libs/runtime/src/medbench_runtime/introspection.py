"""Server reflection (grpc.reflection.v1 and v1alpha) and a health service that answers List.

grpcio-reflection (1.85) serves only v1alpha, and its lookup misses method symbols (the upb
descriptor pool does not index methods): grpcurl's `describe pkg.Service.Method` says "Symbol not
found", and a client speaking only v1 gets UNIMPLEMENTED (grpcurl and ghz ask v1 first and fall
back). Reflection here answers both versions with one servicer. v1's messages are v1alpha's
under another package (the same fields and numbers, so the same wire format); grpcio-reflection
ships no v1 module, so v1's descriptor is derived from the v1alpha one it does ship rather than
generated from a copy of the proto.

What reflection shows is what the server serves: the files defining the listed services and
every file they import, not the rest of the process's descriptor pool (the gateway imports the
protos of the services it calls; a partner has no business reading them). A file always comes
with its transitive imports, the requested one first, as grpcurl and ghz expect; an unknown
file, symbol or extension is an in-band NOT_FOUND ErrorResponse, the stream going on.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# health.List answers RESOURCE_EXHAUSTED beyond this many services, as the protocol allows.
MAX_LISTED = 100

_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc_reflection/v1/reflection.proto"


class HealthService(health.aio.HealthServicer):
    """grpcio's asyncio health service, with List: a snapshot of every status set, the overall
    one ("") included (grpcio's List raises NotImplementedError, logged as a traceback); and
    Watch as an async generator: grpcio's writes through context.write, which the server
    interceptor's wrapper of streaming handlers (it iterates what they return) cannot run."""

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The service's status now, then each change (SERVICE_UNKNOWN while it has none)."""
        service = request.service
        condition = self._server_watchers[service]  # _set notifies it on every change
        self._watcher_count_by_service[service] += 1
        last = None
        try:
            while True:
                async with condition:
                    while (status := self._status(service)) == last:
                        await condition.wait()
                last = status
                # Sent outside the lock: a slow watcher never holds up set().
                yield health_pb2.HealthCheckResponse(status=status)
        finally:
            self._watcher_count_by_service[service] -= 1
            if not self._watcher_count_by_service[service]:
                del self._watcher_count_by_service[service]
                del self._server_watchers[service]

    def _status(self, service: str) -> int:
        status: int = self._server_status.get(
            service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        )
        return status

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)
        if len(statuses) > MAX_LISTED:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(statuses)} services, more than the {MAX_LISTED} List answers for",
            )
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )


@dataclass(frozen=True)
class ReflectionApi:
    """One version of the reflection service: its full name and message classes."""

    service: str
    request: type[Any]
    response: type[Any]

    @property
    def method(self) -> str:
        return f"/{self.service}/ServerReflectionInfo"

    def stub(self, channel: grpc.aio.Channel) -> Any:
        """The ServerReflectionInfo stream of this version, on channel."""
        return channel.stream_stream(
            self.method,
            request_serializer=self.request.SerializeToString,
            response_deserializer=self.response.FromString,
        )


def _renamed(name: str, old: str, new: str) -> str:
    return new + name[len(old) :] if name.startswith(old) else name


def _v1_file() -> FileDescriptor:
    """grpc.reflection.v1's file: from grpcio-reflection if a later release ships it (or it is
    in the pool already), else v1alpha's file under the v1 package."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName(f"{_V1_PACKAGE}.ServerReflection").file
    except KeyError:
        pass
    try:
        return importlib.import_module("grpc_reflection.v1.reflection_pb2").DESCRIPTOR
    except ImportError:
        pass
    alpha = v1alpha_pb2.DESCRIPTOR
    proto = descriptor_pb2.FileDescriptorProto.FromString(alpha.serialized_pb)
    old, new = f".{alpha.package}.", f".{_V1_PACKAGE}."
    proto.name, proto.package = _V1_FILE, _V1_PACKAGE

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                if field.HasField("type_name"):
                    field.type_name = _renamed(field.type_name, old, new)
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type, old, new)
            method.output_type = _renamed(method.output_type, old, new)
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.ClearField("deprecated")  # v1alpha is; v1 is what replaces it
    file: FileDescriptor = pool.AddSerializedFile(proto.SerializeToString())
    return file


def _api(file: FileDescriptor) -> ReflectionApi:
    method = file.services_by_name["ServerReflection"].methods_by_name["ServerReflectionInfo"]
    return ReflectionApi(
        method.containing_service.full_name,
        GetMessageClass(method.input_type),
        GetMessageClass(method.output_type),
    )


REFLECTION_V1 = _api(_v1_file())
REFLECTION_V1ALPHA = _api(v1alpha_pb2.DESCRIPTOR)
REFLECTION_APIS = (REFLECTION_V1, REFLECTION_V1ALPHA)


class Unknown(Exception):
    """A file, symbol or extension reflection does not know (answered NOT_FOUND)."""


class Reflection:
    """Answers reflection requests of either version about the services it was given."""

    def __init__(self, service_names: Iterable[str], pool: Any = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()
        self._services = sorted(set(service_names))
        # The files served: each service's file and, transitively, everything it imports.
        self._files: dict[str, FileDescriptor] = {}
        for name in self._services:
            try:
                file = self._pool.FindServiceByName(name).file
            except KeyError:
                raise ValueError(f"reflection: no descriptor for service {name!r}") from None
            self._closure(file, self._files)

    @property
    def services(self) -> list[str]:
        return list(self._services)

    @staticmethod
    def _closure(file: FileDescriptor, into: dict[str, FileDescriptor]) -> None:
        """file, then its imports depth first, each once (imports cannot form a cycle)."""
        if file.name not in into:
            into[file.name] = file
            for dependency in file.dependencies:
                Reflection._closure(dependency, into)

    def answer(self, request: Any, response_type: type[Any]) -> Any:
        """The response to one request; request and response_type of the same version."""
        kind = request.WhichOneof("message_request")
        body: dict[str, Any]
        try:
            if kind == "list_services":
                services = [{"name": name} for name in self._services]
                body = {"list_services_response": {"service": services}}
            elif kind == "file_by_filename":
                body = self._files_of(self._file(request.file_by_filename))
            elif kind == "file_containing_symbol":
                body = self._files_of(self._symbol_file(request.file_containing_symbol))
            elif kind == "file_containing_extension":
                wanted = request.file_containing_extension
                file = self._extension_file(wanted.containing_type, wanted.extension_number)
                body = self._files_of(file)
            elif kind == "all_extension_numbers_of_type":
                body = self._extension_numbers(request.all_extension_numbers_of_type)
            else:
                body = _error(grpc.StatusCode.INVALID_ARGUMENT, "the request asks nothing")
        except Unknown as exc:
            body = _error(grpc.StatusCode.NOT_FOUND, str(exc))
        return response_type(valid_host=request.host, original_request=request, **body)

    def _served(self, file: FileDescriptor, what: str) -> FileDescriptor:
        if file.name not in self._files:
            raise Unknown(what)
        return file

    def _file(self, name: str) -> FileDescriptor:
        served = self._files.get(name)
        if served is None:
            raise Unknown(f"file not found: {name}")
        return served

    def _symbol_file(self, symbol: str) -> FileDescriptor:
        """The file defining a service, method, message (nested too), field, oneof, enum, enum
        value (by its proto name, a sibling of its enum, or inside the enum) or extension."""
        what = f"symbol not found: {symbol}"
        pool = self._pool
        try:
            return self._served(pool.FindFileContainingSymbol(symbol), what)
        except KeyError:
            pass
        # The pool (upb) does not index methods; members are looked up in their parent.
        parent, _, member = symbol.rpartition(".")
        lookups = (
            (pool.FindServiceByName, ("methods_by_name",)),
            (pool.FindEnumTypeByName, ("values_by_name",)),
            (pool.FindMessageTypeByName, ("fields_by_name", "oneofs_by_name")),
        )
        for find, members in lookups:
            try:
                found = find(parent)
            except KeyError:
                continue
            if any(member in getattr(found, table) for table in members):
                return self._served(found.file, what)
        try:
            return self._served(pool.FindExtensionByName(symbol).file, what)
        except KeyError:
            raise Unknown(what) from None

    def _served_message(self, name: str) -> Any:
        try:
            message = self._pool.FindMessageTypeByName(name)
        except KeyError:
            raise Unknown(f"type not found: {name}") from None
        self._served(message.file, f"type not found: {name}")
        return message

    def _extension_file(self, containing_type: str, number: int) -> FileDescriptor:
        what = f"extension not found: {containing_type} {number}"
        message = self._served_message(containing_type)
        try:
            extension = self._pool.FindExtensionByNumber(message, number)
        except KeyError:
            raise Unknown(what) from None
        return self._served(extension.file, what)

    def _extension_numbers(self, containing_type: str) -> dict[str, Any]:
        message = self._served_message(containing_type)
        numbers = sorted(
            extension.number
            for extension in self._pool.FindAllExtensions(message)
            if extension.file.name in self._files
        )
        return {
            "all_extension_numbers_response": {
                "base_type_name": message.full_name,
                "extension_number": numbers,
            }
        }

    def _files_of(self, file: FileDescriptor) -> dict[str, Any]:
        ordered: dict[str, FileDescriptor] = {}
        self._closure(file, ordered)
        serialized = [f.serialized_pb for f in ordered.values()]
        return {"file_descriptor_response": {"file_descriptor_proto": serialized}}

    def method_handlers(self, api: ReflectionApi) -> dict[str, grpc.RpcMethodHandler]:
        """The handlers of one version of the service."""

        async def info(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for request in requests:
                yield self.answer(request, api.response)

        return {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                info,
                request_deserializer=api.request.FromString,
                response_serializer=api.response.SerializeToString,
            )
        }


def _error(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"error_response": {"error_code": code.value[0], "error_message": message}}


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> Reflection:
    """Serves reflection v1 and v1alpha on server, about service_names and themselves."""
    reflection = Reflection([*service_names, *(api.service for api in REFLECTION_APIS)])
    for api in REFLECTION_APIS:
        handlers = reflection.method_handlers(api)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(api.service, handlers),)
        )
        server.add_registered_method_handlers(api.service, handlers)
    return reflection
