"""Settings of the gateway."""

from pydantic import BaseModel

from medbench_runtime.egress import EgressSettings
from medbench_runtime.settings import ServiceSettings
from medbench_storage.secrets import SecretsSettings


class QuotaSettings(BaseModel):
    """Platform defaults of each tenant's quotas (a tenant's own non-zero values win)."""

    submissions_per_day: int = 50
    concurrent_submissions: int = 5
    items_per_month: int = 1_000_000
    # Caps per pool that bound adaptive probing of a hidden pool (README "Quotas"): official
    # runs (API mode, official settings) per pool of the API board, i.e. per cycle; hidden-pool
    # runs (upload mode, API self-test runs) per pool and UTC day, and per pool.
    official_per_cycle: int = 3
    hidden_per_day: int = 2
    hidden_per_cycle: int = 10


class GatewaySettings(ServiceSettings):
    """Gateway settings."""

    service_name: str = "gateway"
    # A SCORING (or unstalled DISPATCHING) submission unchanged this long counts as stuck.
    stuck_lease_s: float = 1800.0
    # An UploadAnswers stream that sends no message for this long is ended (DEADLINE_EXCEEDED),
    # so a stalled or abandoned client cannot hold a handler and a half-received message.
    upload_idle_timeout_s: float = 300.0
    # ListLeaderboard answers are kept this long (0 = off); a publication through this gateway
    # forgets them at once, one through another replica shows after at most this long.
    leaderboard_cache_s: float = 2.0
    # The aggregator's scoring progress of a submission is kept this long (0 = off): reads of
    # a SCORING or DISPATCHING submission within it share one call to the aggregator, so a
    # partner polling GetSubmission or WatchSubmission makes no aggregator call per poll.
    progress_cache_s: float = 1.0
    # A submission read for GetSubmission / WatchSubmission is kept this long (0 = off): polls
    # within it share one MongoDB read. A change this gateway makes (an upload, a completion,
    # dispatch progress) forgets it at once; one applied by another replica shows within it.
    view_cache_s: float = 1.0
    quotas: QuotaSettings = QuotaSettings()
    # Where partners' endpoints may be (MEDBENCH_EGRESS__*): the same values as the
    # dispatcher's; the gateway refuses what it can tell without resolving a name.
    egress: EgressSettings = EgressSettings()
    # Key-encryption keys of partners' endpoint API keys (required: the gateway seals them).
    secrets: SecretsSettings = SecretsSettings()
