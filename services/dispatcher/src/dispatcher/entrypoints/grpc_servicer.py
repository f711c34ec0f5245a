"""DispatcherServicer: dispatch status, resume and endpoint preflight; proto <-> use cases."""

from __future__ import annotations

import grpc

from dispatcher.entrypoints import convert
from dispatcher.usecases.jobs import DispatchJobs
from dispatcher.usecases.preflight import EndpointCheck
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc


class DispatcherServicer(dispatch_service_pb2_grpc.DispatcherServiceServicer):
    """Internal API of the dispatcher."""

    def __init__(self, jobs: DispatchJobs, check: EndpointCheck) -> None:
        self._jobs = jobs
        self._check = check

    async def GetDispatch(
        self, request: dispatch_service_pb2.GetDispatchRequest, context: grpc.aio.ServicerContext
    ) -> dispatch_service_pb2.GetDispatchResponse:
        return convert.status_to_proto(await self._jobs.status(request.submission_id))

    async def ResumeDispatch(
        self,
        request: dispatch_service_pb2.ResumeDispatchRequest,
        context: grpc.aio.ServicerContext,
    ) -> dispatch_service_pb2.ResumeDispatchResponse:
        resumed = await self._jobs.resume(request.submission_id)
        return dispatch_service_pb2.ResumeDispatchResponse(state="RUNNING", resumed_items=resumed)

    async def Preflight(
        self, request: dispatch_service_pb2.PreflightRequest, context: grpc.aio.ServicerContext
    ) -> dispatch_service_pb2.PreflightResponse:
        """Reachable and authorised (GET /models), model listed, answers a tiny prompt."""
        return convert.preflight_to_proto(
            await self._check.preflight(request.base_url, request.model, request.api_key)
        )
