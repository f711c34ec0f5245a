"""Settings read from the environment (MEDBENCH_<GROUP>__<FIELD>), once, in __main__."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, SecretStr, model_validator
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
    # TLS files (PEM) kept apart from the URI, which carries the user and whether TLS is on:
    # mongodb://<user>:<password>@host/?tls=true&authSource=admin&authMechanism=SCRAM-SHA-256.
    # Either file turns TLS on. tls_ca_file: the CA that signed the server's certificate (else
    # the system's); tls_certificate_key_file: this client's certificate and private key in one
    # file, for servers that require client certificates.
    tls_ca_file: str = ""
    tls_certificate_key_file: str = ""

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
    # Transport security (README "Transport security"): PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or
    # SASL_SSL (SASL over TLS). Every Kafka client the platform creates uses these.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL (SASL_*): SCRAM-SHA-512 (or -256; salted challenge, the password never crosses the
    # wire), or PLAIN (the password crosses the wire: only over TLS in production).
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    # The password, or a file holding it (a mounted Secret; read at client start, one trailing
    # newline dropped). Exactly one of the two with SASL.
    sasl_password: SecretStr = SecretStr("")
    sasl_password_file: str = ""
    # TLS (SSL, SASL_SSL), PEM files: the CA that signed the brokers' certificates (else the
    # system's), and this client's certificate and key when the brokers require them (mTLS).
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # Check that the broker's certificate names the host connected to (leave on in production).
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_combination(self) -> KafkaSettings:
        """Refuses, at start, settings whose combination cannot work or would be ignored."""
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        password = bool(self.sasl_password.get_secret_value())
        if sasl:
            if not self.sasl_username:
                raise ValueError(
                    f"MEDBENCH_KAFKA__SECURITY_PROTOCOL={self.security_protocol} needs "
                    "MEDBENCH_KAFKA__SASL_USERNAME"
                )
            if password == bool(self.sasl_password_file):
                raise ValueError(
                    f"MEDBENCH_KAFKA__SECURITY_PROTOCOL={self.security_protocol} needs exactly "
                    "one of MEDBENCH_KAFKA__SASL_PASSWORD and MEDBENCH_KAFKA__SASL_PASSWORD_FILE"
                    + (" (both are set)" if password else "")
                )
        elif self.sasl_username or password or self.sasl_password_file:
            raise ValueError(
                "SASL credentials are set but MEDBENCH_KAFKA__SECURITY_PROTOCOL is "
                f"{self.security_protocol}; use SASL_SSL (or SASL_PLAINTEXT) or remove them"
            )
        if not tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ValueError(
                "TLS files are set but MEDBENCH_KAFKA__SECURITY_PROTOCOL is "
                f"{self.security_protocol}; use SSL or SASL_SSL or remove them"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError(
                "MEDBENCH_KAFKA__SSL_CERTFILE and MEDBENCH_KAFKA__SSL_KEYFILE go together "
                "(a client certificate needs its key)"
            )
        return self


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

    # This service's own token for its calls to the other services (ROLE_SERVICE):
    # "mbs_<service>_<secret>" (medbench_runtime.auth.mint_service_token). Without
    # service_token_hashes it is the legacy token shared by every service (at least 32
    # characters) and also admits callers. Empty refuses every service call.
    service_token: SecretStr = SecretStr("")
    # SHA-256 (hex) of each service's own token, by service name (JSON in
    # MEDBENCH_AUTH__SERVICE_TOKEN_HASHES): the only service credentials this service admits;
    # each RPC names the services that may call it (README "Service credentials").
    service_token_hashes: dict[str, str] = {}
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
    # A client connection to this service's gRPC port is closed (GOAWAY) after this long (0 =
    # never), so callers resolve the peer's name again and spread over replicas started since
    # (README "Balancing and replicas"). New calls go to a new connection at once; calls in
    # flight on the old one get the grace to finish, then are cut (UNAVAILABLE). 0 = no limit:
    # a long stream (WatchSubmission of a long evaluation) is never cut for age.
    grpc_max_connection_age_s: float = 300.0
    grpc_max_connection_age_grace_s: float = 0.0
    mongo: MongoSettings = MongoSettings()
    kafka: KafkaSettings = KafkaSettings()
    peers: PeerSettings = PeerSettings()
    auth: AuthSettings = AuthSettings()
    tracing: TracingSettings = TracingSettings()

    @property
    def member_id(self) -> str:
        """Stable id of this replica: the instance id, else service@hostname (the pod name)."""
        return self.instance_id or f"{self.service_name}@{socket.gethostname()}"
