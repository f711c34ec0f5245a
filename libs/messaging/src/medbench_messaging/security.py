"""The transport security options (TLS, SASL) every kafka-python client of the platform gets.

The settings' combination is checked when they are read (KafkaSettings); the files they name are
checked here, when a client is built, so a service refuses to start with a message naming the
setting instead of failing its first connection. Passwords never reach a log: kafka-python's
admin client logs its whole configuration at DEBUG, so that record is redacted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medbench_runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

# Options whose values must never be logged.
SECRET_OPTIONS = ("sasl_plain_password", "ssl_password")
_REDACTED = "[redacted]"
# Whether the SASL-without-TLS warning was given (once per process).
_WARNED: list[str] = []


class KafkaSecurityError(ValueError):
    """The Kafka security settings name a file that cannot be read, or the broker refused the
    client's TLS handshake or SASL credentials."""


def _readable(setting: str, path: str) -> str:
    file = Path(path)
    try:
        with file.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise KafkaSecurityError(
            f"MEDBENCH_KAFKA__{setting.upper()}={path}: cannot read it ({exc.strerror})"
        ) from None
    return str(file)


def sasl_password(settings: KafkaSettings) -> str:
    """The SASL password: the setting, else the file's content (one trailing newline dropped,
    as `kubectl create secret --from-file` and editors leave one)."""
    if settings.sasl_password_file:
        path = _readable("sasl_password_file", settings.sasl_password_file)
        text = Path(path).read_text(encoding="utf-8")
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        if not text:
            raise KafkaSecurityError(
                f"MEDBENCH_KAFKA__SASL_PASSWORD_FILE={settings.sasl_password_file} is empty"
            )
        return text
    return settings.sasl_password.get_secret_value()


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments of KafkaProducer, KafkaConsumer and KafkaAdminClient for the settings'
    transport security (nothing beyond security_protocol for PLAINTEXT)."""
    protocol = settings.security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_check_hostname"] = settings.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(settings, name)
            if path:
                options[name] = _readable(name, path)
    if protocol.startswith("SASL_"):
        if protocol == "SASL_PLAINTEXT" and not _WARNED:
            _WARNED.append(protocol)
            log.warning(
                "Kafka SASL without TLS (%s): the traffic%s crosses the network in the clear",
                settings.sasl_mechanism,
                ", the password included," if settings.sasl_mechanism == "PLAIN" else "",
            )
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = sasl_password(settings)
    return options


def redact(value: Any) -> Any:
    """value with the secret options' values replaced (dicts, also nested in tuples)."""
    if isinstance(value, dict):
        return {k: _REDACTED if k in SECRET_OPTIONS and v else redact(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value


class _RedactSecrets(logging.Filter):
    """Replaces secret options in a log record's arguments (kafka-python's configuration
    dumps) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = redact(record.args)
        return True


def install_log_redaction() -> None:
    """Redacts passwords from kafka-python's configuration dumps (idempotent)."""
    for name in ("kafka.admin.client", "kafka.producer.kafka", "kafka.consumer.group"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
            logger.addFilter(_RedactSecrets())


install_log_redaction()
