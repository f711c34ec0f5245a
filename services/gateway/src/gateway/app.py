"""Composition root of the gateway."""

from __future__ import annotations

from functools import partial

from gateway.adapters.grpc_peers import DispatchClient, ReportClient, RotatorClient
from gateway.adapters.mongo_identity import MongoApiKeys, MongoTenants
from gateway.adapters.mongo_probing import INDEXES as PROBING_INDEXES
from gateway.adapters.mongo_probing import MongoProbing
from gateway.adapters.mongo_quota_ledger import MongoQuotaLedger
from gateway.adapters.mongo_stuck import StuckSweeper
from gateway.adapters.mongo_submissions import INDEXES, MongoSubmissions
from gateway.core.quotas import Quotas
from gateway.entrypoints.grpc_servicer import SubmissionServicer
from gateway.entrypoints.identity_servicer import IdentityServicer
from gateway.entrypoints.kafka_handlers import on_dispatch_progressed, on_submission_completed
from gateway.entrypoints.leaderboard_proxy import LeaderboardProxy
from gateway.entrypoints.probing_servicer import ProbingServicer
from gateway.entrypoints.quarantine_servicer import QuarantineServicer
from gateway.settings import GatewaySettings
from gateway.usecases.identity import Identity
from gateway.usecases.images import Images
from gateway.usecases.probing import Probing
from gateway.usecases.quarantine import QuarantineReview
from gateway.usecases.submissions import Submissions
from medbench.identity.v1 import identity_service_pb2_grpc
from medbench.leaderboard.v1 import leaderboard_service_pb2_grpc
from medbench.ops.v1 import probing_service_pb2_grpc, quarantine_service_pb2_grpc
from medbench.submission.v1 import submission_service_pb2_grpc
from medbench_messaging import topics
from medbench_runtime.auth import Authenticator
from medbench_runtime.grpc_clients import insecure_channel
from medbench_runtime.service import Servicer, run_service
from medbench_storage.endpoint_keys import SEALED_INDEXES, EndpointKeys
from medbench_storage.infra import open_infrastructure
from medbench_storage.secrets import envelope_from_settings
from medbench_storage.transactional import MongoOutbox, MongoTransactions


async def serve(settings: GatewaySettings) -> None:
    # Before anything else: without a key-encryption key no API-mode submission could be taken.
    envelope = envelope_from_settings(settings.secrets)
    async with open_infrastructure(settings, (*INDEXES, *PROBING_INDEXES), SEALED_INDEXES) as infra:
        rotator = RotatorClient(insecure_channel(settings.peers.rotator, settings))
        reports = ReportClient(
            insecure_channel(settings.peers.aggregator, settings), settings.leaderboard_cache_s
        )
        dispatch = DispatchClient(insecure_channel(settings.peers.dispatcher, settings))
        auth = Authenticator(
            settings.auth.service_token.get_secret_value(),
            infra.key_store,
            settings.auth.cache_ttl_s,
            service_token_hashes=settings.auth.service_token_hashes,
        )
        q = settings.quotas
        quotas = MongoQuotaLedger(
            infra.db,
            Quotas(
                q.submissions_per_day,
                q.concurrent_submissions,
                q.items_per_month,
                q.official_per_cycle,
                q.hidden_per_day,
                q.hidden_per_cycle,
            ),
        )
        identity = Identity(
            MongoTenants(infra.db), MongoApiKeys(infra.db, auth), quotas, infra.audit_log, rotator
        )
        probing = Probing(MongoProbing(infra.db))
        store = MongoSubmissions(infra.db, EndpointKeys(infra.sealed_db, envelope))
        submissions = Submissions(
            store,
            MongoTransactions(infra),
            MongoOutbox(infra),
            rotator,
            reports,
            dispatch,
            quotas,
            settings.egress.policy(),
            progress_cache_s=settings.progress_cache_s,
            view_cache_s=settings.view_cache_s,
            probing=probing,
        )
        completed = infra.consumer(
            topics.SUBMISSION_COMPLETED,
            group_id="gateway",
            handler=partial(on_submission_completed, submissions=submissions),
        )
        dispatched = infra.consumer(
            topics.DISPATCH_PROGRESSED,
            group_id="gateway-progress",
            handler=partial(on_dispatch_progressed, submissions=submissions),
        )
        await run_service(
            settings,
            infra.runtime(
                servicers=[
                    Servicer.of(
                        submission_service_pb2_grpc,
                        SubmissionServicer(
                            submissions, Images(store, rotator), settings.upload_idle_timeout_s
                        ),
                    ),
                    Servicer.of(leaderboard_service_pb2_grpc, LeaderboardProxy(reports)),
                    Servicer.of(identity_service_pb2_grpc, IdentityServicer(identity)),
                    Servicer.of(probing_service_pb2_grpc, ProbingServicer(probing)),
                    Servicer.of(
                        quarantine_service_pb2_grpc,
                        QuarantineServicer(QuarantineReview(infra.quarantine, infra.publisher)),
                    ),
                ],
                workers=[
                    completed,
                    dispatched,
                    StuckSweeper(infra.db, lease_s=settings.stuck_lease_s),
                ],
                auth=auth,
                # The public API: partners (and grpcurl without a key) may read its schema.
                open_reflection=True,
            ),
        )
