"""Settings read from the environment (MEDBENCH_<GROUP>__<FIELD>), once, in __main__."""

from __future__ import annotations

import socket

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from medbench_runtime.tracing import TracingSettings


class MongoSettings(BaseModel):
    """Where the service keeps its state."""

    uri: SecretStr = SecretStr("mongodb://127.0.0.1:27017/?directConnection=true")
    database: str = "medbench"
    # Sealed data (reference answers, key points) lives in its own database; in production it
    # has its own credentials, held only by the rotator and the scorers. "" -> "<database>_sealed".
    sealed_database: str = ""
    server_selection_timeout_s: float = 10.0

    @property
    def sealed_database_name(self) -> str:
        """Name of the sealed database."""
        return self.sealed_database or f"{self.database}_sealed"


class KafkaSettings(BaseModel):
    """How the service reaches Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # Prepended to every topic name; lets tests and tenants of a shared broker stay apart.
    topic_prefix: str = ""
    partitions: int = 3
    replication_factor: int = 1
    # A message whose handler fails this many times goes to the topic's dead-letter twin.
    max_delivery_attempts: int = 5
    retry_backoff_s: float = 0.2
    session_timeout_ms: int = 10_000
    max_poll_records: int = 50
    # Kafka producer batching: how long to wait for more records before sending.
    linger_ms: int = 5
    # Largest encoded event value (bytes); bigger batches are split into parts that fit (see
    # medbench_messaging.sizing). Topics are created with max.message.bytes of this plus 16 KiB;
    # an external Kafka must allow as much on every topic (the service checks at start).
    max_event_bytes: int = 1_000_000


class PeerSettings(BaseModel):
    """gRPC addresses of the other services (host:port)."""

    gateway: str = "127.0.0.1:50051"
    rotator: str = "127.0.0.1:50052"
    dispatcher: str = "127.0.0.1:50053"
    metric_scorer: str = "127.0.0.1:50054"
    judge_scorer: str = "127.0.0.1:50055"
    aggregator: str = "127.0.0.1:50056"


class AuthSettings(BaseModel):
    """How callers prove who they are (see medbench_runtime.auth)."""

    # Shared by the platform's services for their calls to each other (ROLE_SERVICE); at least
    # 32 characters. Empty refuses every service call.
    service_token: SecretStr = SecretStr("")
    # Gateway only: a maintainer key ("mbk_<id>_<secret>") installed at start for the platform
    # tenant, so that a new deployment can create its first tenants and keys.
    bootstrap_key: SecretStr = SecretStr("")
    # How long a verified key is trusted before it is read again (revocation delay elsewhere
    # than on the gateway).
    cache_ttl_s: float = 5.0
    # Refused (UNAUTHENTICATED) calls written to the audit log per peer address: a burst, then a
    # rate per second; the rest are only counted, so a flood of bad keys costs no write each.
    refusals_audit_burst: int = 100
    refusals_audit_per_s: float = 1.0
    # Optional TLS for the gRPC port (PEM files). With client_ca_file, clients must present a
    # certificate signed by that CA (mutual TLS) and a partner's certificate subject must be
    # bound to its key's tenant.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""


class ServiceSettings(BaseSettings):
    """Settings every service has; services subclass it to add their own groups."""

    model_config = SettingsConfigDict(
        env_prefix="MEDBENCH_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "medbench"
    # Identifies this replica (the pod name in Kubernetes); used as Kafka static membership id.
    instance_id: str = ""
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9090
    # Bearer token /metrics requires (MEDBENCH_METRICS_TOKEN, at least 16 characters); empty
    # leaves it open to whoever reaches metrics_host:metrics_port.
    metrics_token: SecretStr = SecretStr("")
    log_level: str = "INFO"
    shutdown_grace_s: float = 10.0
    grpc_max_message_bytes: int = 16 * 1024 * 1024
    mongo: MongoSettings = MongoSettings()
    kafka: KafkaSettings = KafkaSettings()
    peers: PeerSettings = PeerSettings()
    auth: AuthSettings = AuthSettings()
    tracing: TracingSettings = TracingSettings()

    @property
    def member_id(self) -> str:
        """Stable id of this replica: the instance id, else service@hostname (the pod name)."""
        return self.instance_id or f"{self.service_name}@{socket.gethostname()}"
