"""Composition root of the dispatcher."""

from __future__ import annotations

from functools import partial

from dispatcher.adapters.mongo_jobs import INDEXES, MongoJobs
from dispatcher.core.retry import RetryPolicy
from dispatcher.entrypoints.grpc_servicer import DispatcherServicer
from dispatcher.entrypoints.kafka_handlers import on_submission_created
from dispatcher.retention import KeyRetention
from dispatcher.runner import Dispatcher
from dispatcher.settings import DispatcherSettings
from medbench.dispatch.v1 import dispatch_service_pb2, dispatch_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.grpc_clients import insecure_channel
from medbench_runtime.http_client import HttpClient
from medbench_runtime.openai_endpoint import OpenAIEndpoint
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_storage.endpoint_keys import SEALED_INDEXES, EndpointKeys
from medbench_storage.infra import open_infrastructure
from medbench_storage.secrets import envelope_from_settings


async def serve(settings: DispatcherSettings) -> None:
    # Before anything else: without its key-encryption keys no endpoint key can be opened.
    envelope = envelope_from_settings(settings.secrets)
    # Partners' endpoints only where the egress policy allows, replies bounded.
    http = HttpClient(
        max_idle=settings.global_concurrency,
        egress=settings.egress.policy(),
        max_header_bytes=settings.reply_max_header_bytes,
        max_body_bytes=settings.reply_max_body_bytes,
    )
    async with open_infrastructure(settings, INDEXES, SEALED_INDEXES) as infra:
        keys = EndpointKeys(infra.sealed_db, envelope)
        await keys.migrate_plaintext(infra.db)
        # A key-encryption key removed while it still wraps stored keys stops the start (naming
        # the setting), before any run would fail for it.
        await keys.check_readable()
        jobs = MongoJobs(infra.db, keys)
        endpoint = OpenAIEndpoint(http, timeout_s=settings.request_timeout_s)
        rotator = taskpool_service_pb2_grpc.TaskPoolServiceStub(
            insecure_channel(settings.peers.rotator, settings)
        )
        policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )
        dispatcher = Dispatcher(
            infra,
            jobs,
            endpoint,
            rotator,
            settings.global_concurrency,
            policy,
            throttle_tolerance=settings.throttle_tolerance,
        )
        consumer = infra.consumer(
            topics.SUBMISSION_CREATED,
            group_id="dispatcher",
            handler=partial(on_submission_created, jobs=jobs, notify=dispatcher.notify),
        )
        await run_service(
            settings,
            ServiceRuntime(
                servicers=[
                    Servicer(
                        dispatch_service_pb2_grpc.add_DispatcherServiceServicer_to_server,
                        DispatcherServicer(
                            jobs, endpoint, dispatcher, settings.preflight_timeout_s
                        ),
                        dispatch_service_pb2.DESCRIPTOR.services_by_name[
                            "DispatcherService"
                        ].full_name,
                    )
                ],
                workers=[
                    infra.relay,
                    consumer,
                    dispatcher,
                    KeyRetention(jobs, keys, settings.secrets.stalled_retention_days),
                ],
                readiness=[infra.ready],
                key_store=infra.key_store,
                audit=infra.audit_log,
            ),
        )
