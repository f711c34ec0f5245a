"""DispatcherServicer: dispatch status and endpoint preflight."""

from __future__ import annotations

import asyncio

import grpc

from dispatcher.adapters.mongo_jobs import MongoJobs
from dispatcher.core.retry import Outcome, classify
from dispatcher.runner import Dispatcher
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.openai_endpoint import OpenAIEndpoint


class DispatcherServicer(dispatch_service_pb2_grpc.DispatcherServiceServicer):
    """Internal API of the dispatcher."""

    def __init__(self, jobs: MongoJobs, endpoint: OpenAIEndpoint, dispatcher: Dispatcher) -> None:
        self._jobs = jobs
        self._endpoint = endpoint
        self._dispatcher = dispatcher

    async def GetDispatch(
        self, request: dispatch_service_pb2.GetDispatchRequest, context: grpc.aio.ServicerContext
    ) -> dispatch_service_pb2.GetDispatchResponse:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._jobs.job(request.submission_id)
        if doc is None:
            return dispatch_service_pb2.GetDispatchResponse()
        live = self._dispatcher.job(request.submission_id)
        if live is not None:
            answered, failed = live.answered, live.infra_failed
        elif "answered" in doc:
            answered, failed = doc["answered"], doc["infra_failed"]
        else:  # waiting to be picked up, or resumed: count what is recorded
            answered, failed = await self._jobs.counts(request.submission_id)
        return dispatch_service_pb2.GetDispatchResponse(
            state=doc["state"],
            reason=doc.get("reason", ""),
            answered_items=answered,
            infra_failed_items=failed,
            calls=doc.get("calls", 0) + (live.calls if live else 0),
            concurrency=live.limit.limit if live else 0,
        )

    async def ResumeDispatch(
        self,
        request: dispatch_service_pb2.ResumeDispatchRequest,
        context: grpc.aio.ServicerContext,
    ) -> dispatch_service_pb2.ResumeDispatchResponse:
        if not request.submission_id:
            raise InvalidArgument("submission_id is required")
        doc = await self._jobs.job(request.submission_id)
        if doc is None:
            raise NotFound(f"no dispatch for submission {request.submission_id}")
        if doc["state"] in ("DONE", "FAILED"):
            raise FailedPrecondition(
                f"submission {request.submission_id} is {doc['state']}: nothing to resume"
                + (f" ({doc['reason']})" if doc.get("reason") else "")
            )
        resumed = await self._jobs.resume(request.submission_id)
        self._dispatcher.notify()
        return dispatch_service_pb2.ResumeDispatchResponse(state="RUNNING", resumed_items=resumed)

    async def Preflight(
        self, request: dispatch_service_pb2.PreflightRequest, context: grpc.aio.ServicerContext
    ) -> dispatch_service_pb2.PreflightResponse:
        """Reachable and authorised (GET /models), model listed, answers a tiny prompt."""
        status, body = await self._endpoint.models(request.base_url, request.api_key)
        if status is None:
            return dispatch_service_pb2.PreflightResponse(
                ok=False, reason=f"endpoint unreachable: {body}"
            )
        if status in (401, 403):
            return dispatch_service_pb2.PreflightResponse(
                ok=False, reason=f"endpoint refused the API key (HTTP {status})"
            )
        if status == 200 and isinstance(body, dict):
            names = {m.get("id") for m in body.get("data", []) if isinstance(m, dict)}
            if names and request.model not in names:
                return dispatch_service_pb2.PreflightResponse(
                    ok=False, reason=f"model {request.model!r} is not among {sorted(names)[:10]}"
                )
        body = {
            "model": request.model,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": "请回答：1+1=？只输出数字。"}],
        }
        # A busy endpoint may throttle or hiccup once; the contract retries those.
        for attempt in range(3):
            result = await self._endpoint.chat(request.base_url, request.api_key, body)
            if classify(result.status, result.error or None) is not Outcome.RETRY:
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if result.status != 200:
            return dispatch_service_pb2.PreflightResponse(
                ok=False, reason=f"tiny prompt failed: {result.error}"
            )
        return dispatch_service_pb2.PreflightResponse(ok=True, latency_ms=result.latency_ms)
