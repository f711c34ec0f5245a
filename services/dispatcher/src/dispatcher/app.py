"""Composition root of the dispatcher."""

from __future__ import annotations

from functools import partial

from dispatcher.adapters.failures import is_outage, load_failure
from dispatcher.adapters.grpc_rotator_prompts import RotatorPrompts
from dispatcher.adapters.mongo_jobs import INDEXES, MongoJobs
from dispatcher.adapters.rotator_images import RotatorImages
from dispatcher.core.retry import RetryPolicy
from dispatcher.entrypoints.grpc_servicer import DispatcherServicer
from dispatcher.entrypoints.kafka_handlers import on_submission_created
from dispatcher.settings import DispatcherSettings
from dispatcher.usecases.jobs import DispatchJobs
from dispatcher.usecases.preflight import EndpointCheck
from dispatcher.usecases.retention import KeyRetention
from dispatcher.usecases.runner import Dispatcher
from medbench.dispatch.v1 import dispatch_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.grpc_clients import insecure_channel
from medbench_runtime.http_client import HttpClient
from medbench_runtime.openai_endpoint import OpenAIEndpoint
from medbench_runtime.service import Servicer, run_service
from medbench_storage.endpoint_keys import SEALED_INDEXES, EndpointKeys
from medbench_storage.infra import open_infrastructure
from medbench_storage.secrets import envelope_from_settings
from medbench_storage.transactional import MongoOutbox, MongoTransactions


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
        transactions, outbox = MongoTransactions(infra), MongoOutbox(infra)
        dispatcher = Dispatcher(
            jobs,
            endpoint,
            RotatorPrompts(rotator),
            RotatorImages(rotator),
            transactions,
            outbox,
            outage=is_outage,
            load_failure=load_failure,
            global_cap=settings.global_concurrency,
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_delay_s=settings.retry_base_delay_s,
                max_delay_s=settings.retry_max_delay_s,
            ),
            throttle_tolerance=settings.throttle_tolerance,
            # What one import message carries: every item the bank admits can be sent.
            max_image_bytes=settings.grpc_max_message_bytes,
            max_request_image_bytes=settings.grpc_max_message_bytes,
        )
        dispatch_jobs = DispatchJobs(jobs, dispatcher, transactions, outbox)
        consumer = infra.consumer(
            topics.SUBMISSION_CREATED,
            group_id="dispatcher",
            handler=partial(on_submission_created, jobs=dispatch_jobs),
        )
        retention = KeyRetention(
            jobs, keys, transactions, outbox, settings.secrets.stalled_retention_days
        )
        await run_service(
            settings,
            infra.runtime(
                servicers=[
                    Servicer.of(
                        dispatch_service_pb2_grpc,
                        DispatcherServicer(
                            dispatch_jobs, EndpointCheck(endpoint, settings.preflight_timeout_s)
                        ),
                    )
                ],
                workers=[consumer, dispatcher, retention],
            ),
        )
