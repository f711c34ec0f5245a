"""Composition root of the gateway."""

from __future__ import annotations

from functools import partial

from gateway.adapters.mongo_submissions import INDEXES, MongoSubmissions
from gateway.adapters.peers import DispatchClient, ReportClient, RotatorClient
from gateway.entrypoints.grpc_servicer import SubmissionServicer
from gateway.entrypoints.identity_servicer import IdentityServicer
from gateway.entrypoints.kafka_handlers import on_submission_completed
from gateway.entrypoints.leaderboard_proxy import LeaderboardProxy
from gateway.entrypoints.quarantine_servicer import QuarantineServicer
from gateway.identity import Identity
from gateway.quotas import QuotaLedger, Quotas
from gateway.settings import GatewaySettings
from gateway.stuck import StuckSweeper
from gateway.submissions import Submissions
from medbench.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2, leaderboard_service_pb2_grpc
from medbench.ops.v1 import quarantine_service_pb2, quarantine_service_pb2_grpc
from medbench.submission.v1 import submission_service_pb2, submission_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.auth import Authenticator
from medbench_runtime.grpc_clients import insecure_channel
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_storage.endpoint_keys import SEALED_INDEXES, EndpointKeys
from medbench_storage.infra import open_infrastructure
from medbench_storage.secrets import envelope_from_settings


async def serve(settings: GatewaySettings) -> None:
    # Before anything else: without a key-encryption key no API-mode submission could be taken.
    envelope = envelope_from_settings(settings.secrets)
    async with open_infrastructure(settings, INDEXES, SEALED_INDEXES) as infra:
        rotator = RotatorClient(insecure_channel(settings.peers.rotator, settings))
        reports = ReportClient(
            insecure_channel(settings.peers.aggregator, settings), settings.leaderboard_cache_s
        )
        dispatch = DispatchClient(insecure_channel(settings.peers.dispatcher, settings))
        auth = Authenticator(
            settings.auth.service_token.get_secret_value(),
            infra.key_store,
            settings.auth.cache_ttl_s,
        )
        identity = Identity(infra.db, auth)
        q = settings.quotas
        quotas = QuotaLedger(
            infra.db,
            Quotas(q.submissions_per_day, q.concurrent_submissions, q.items_per_month),
        )
        store = MongoSubmissions(infra.db, EndpointKeys(infra.sealed_db, envelope))
        submissions = Submissions(
            infra, store, rotator, reports, dispatch, quotas, settings.egress.policy()
        )

        completed = infra.consumer(
            topics.SUBMISSION_COMPLETED,
            group_id="gateway",
            handler=partial(on_submission_completed, submissions=submissions),
        )
        await run_service(
            settings,
            ServiceRuntime(
                servicers=[
                    Servicer(
                        submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server,
                        SubmissionServicer(submissions, rotator, settings.upload_idle_timeout_s),
                        submission_service_pb2.DESCRIPTOR.services_by_name[
                            "SubmissionService"
                        ].full_name,
                    ),
                    Servicer(
                        leaderboard_service_pb2_grpc.add_LeaderboardServiceServicer_to_server,
                        LeaderboardProxy(reports),
                        leaderboard_service_pb2.DESCRIPTOR.services_by_name[
                            "LeaderboardService"
                        ].full_name,
                    ),
                    Servicer(
                        identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,
                        IdentityServicer(identity, quotas, infra.audit_log),
                        identity_service_pb2.DESCRIPTOR.services_by_name[
                            "IdentityService"
                        ].full_name,
                    ),
                    Servicer(
                        quarantine_service_pb2_grpc.add_QuarantineServiceServicer_to_server,
                        QuarantineServicer(infra.quarantine, infra.publisher),
                        quarantine_service_pb2.DESCRIPTOR.services_by_name[
                            "QuarantineService"
                        ].full_name,
                    ),
                ],
                workers=[
                    infra.relay,
                    completed,
                    StuckSweeper(infra.db, lease_s=settings.stuck_lease_s),
                ],
                readiness=[infra.ready],
                auth=auth,
                audit=infra.audit_log,
                # The public API: partners (and grpcurl without a key) may read its schema.
                open_reflection=True,
            ),
        )
