"""DispatcherServicer: dispatch status and endpoint preflight."""

from __future__ import annotations

import asyncio

import grpc

from dispatcher.adapters.mongo_jobs import MongoJobs
from dispatcher.core.retry import Outcome, classify
from dispatcher.runner import Dispatcher
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench_runtime.egress import BadEndpointUrl, EgressRefused, parse_endpoint_url
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from medbench_runtime.openai_endpoint import OpenAIEndpoint

# Model ids a "model not listed" reason names, and how much of each.
SHOWN_MODELS = 10
SHOWN_MODEL_CHARS = 80


class DispatcherServicer(dispatch_service_pb2_grpc.DispatcherServiceServicer):
    """Internal API of the dispatcher."""

    def __init__(
        self,
        jobs: MongoJobs,
        endpoint: OpenAIEndpoint,
        dispatcher: Dispatcher,
        preflight_timeout_s: float = 60.0,
    ) -> None:
        self._jobs = jobs
        self._endpoint = endpoint
        self._dispatcher = dispatcher
        self._preflight_timeout_s = preflight_timeout_s

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
        """Reachable and authorised (GET /models), model listed, answers a tiny prompt.

        INVALID_ARGUMENT, before any connection, for a URL that is not usable or an endpoint the
        egress policy refuses (checked where the connection is made: every address the host
        resolves to); ok=False with the failure class (never a reply body) otherwise."""
        try:
            url = parse_endpoint_url(request.base_url)
        except BadEndpointUrl as exc:
            raise InvalidArgument(f"endpoint.base_url {exc}") from None
        try:
            async with asyncio.timeout(self._preflight_timeout_s):
                reason, latency_ms = await self._preflight(url.url, request.model, request.api_key)
        except EgressRefused as exc:
            raise InvalidArgument(
                f"endpoint.base_url refused by the egress policy: {exc}"
            ) from None
        except TimeoutError:
            reason = (
                f"the preflight did not finish within {self._preflight_timeout_s:g} s (timeout)"
            )
        if reason:
            return dispatch_service_pb2.PreflightResponse(ok=False, reason=reason)
        return dispatch_service_pb2.PreflightResponse(ok=True, latency_ms=latency_ms)

    async def _preflight(self, base_url: str, model: str, api_key: str) -> tuple[str, float]:
        """("", latency of the tiny prompt) when the endpoint passes, else (reason, 0)."""
        listed = await self._endpoint.models(base_url, api_key)
        if listed.status is None:
            return f"GET /models failed: {listed.error}", 0.0
        if listed.status in (401, 403):
            return f"endpoint refused the API key (HTTP {listed.status})", 0.0
        if 200 <= listed.status <= 299:
            if listed.models is None:
                return f"GET /models: {listed.error}", 0.0
            if listed.models and model not in listed.models:
                shown = [m[:SHOWN_MODEL_CHARS] for m in sorted(listed.models)[:SHOWN_MODELS]]
                return f"model {model!r} is not among {shown}", 0.0
        body = {
            "model": model,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": "请回答：1+1=？只输出数字。"}],
        }
        # A busy endpoint may throttle or hiccup once; the contract retries those.
        for attempt in range(3):
            result = await self._endpoint.chat(base_url, api_key, body)
            if result.refused:  # the name now resolves elsewhere: refused all the same
                raise EgressRefused(result.error.removeprefix("refused by the egress policy: "))
            if classify(result.status, result.error or None) is not Outcome.RETRY:
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if result.status != 200:
            return f"tiny prompt failed: {result.error}", 0.0
        return "", result.latency_ms
