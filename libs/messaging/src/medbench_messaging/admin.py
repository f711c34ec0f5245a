"""Creates the platform's topics and their dead-letter twins (idempotent), and checks that every
topic admits the largest event the platform sends (see medbench_messaging.sizing)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownBrokerIdError

from medbench_messaging.preflight import check_broker
from medbench_messaging.security import client_options
from medbench_messaging.sizing import broker_max_message_bytes
from medbench_messaging.topics import ALL_TOPICS, Topic
from medbench_runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = "max.message.bytes"
# How long a created topic may take to show a leader for every partition.
LEADERS_TIMEOUT_S = 60.0
# How long topic set-up retries what a cluster still electing its controller or registering its
# brokers answers (a controller the client's metadata does not list yet, a node not ready).
SETUP_RETRY_S = 60.0


class TopicTooSmall(RuntimeError):
    """A topic admits smaller records than the platform's events may be."""


def _names(settings: KafkaSettings, topics: Iterable[Topic]) -> list[str]:
    prefix = settings.topic_prefix
    return [n for t in topics for n in (t.full_name(prefix), t.dead_letter_name(prefix))]


def _admitted(described: Any, name: str) -> int | None:
    """The topic's max.message.bytes from a describe_configs answer (None if not reported)."""
    try:
        return int(described["topic"][name][MAX_MESSAGE_BYTES]["value"])
    except (KeyError, TypeError, ValueError):
        return None


def _without_leaders(described: Iterable[Any], partitions: int) -> list[str]:
    """Topics of a describe_topics answer not yet served whole: an error, fewer partitions than
    created, or a partition with no leader."""
    out = []
    for topic in described:
        parts = topic.get("partitions") or []
        if (
            topic.get("error_code")
            or len(parts) < partitions
            or any(p.get("error_code") or p.get("leader_id", -1) < 0 for p in parts)
        ):
            out.append(str(topic.get("name") or topic.get("topic")))
    return out


def _await_leaders(admin: Any, names: list[str], partitions: int, timeout_s: float) -> None:
    """Returns once the broker's metadata shows every topic with a leader per partition, so a
    consumer started next gets every partition in its first assignment (a topic missing from
    it would make the group rebalance later, pausing consumption meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = _without_leaders(admin.describe_topics(names), partitions)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"topics without a leader for every partition after {timeout_s:.0f} s: "
                + ", ".join(sorted(missing))
            )
        time.sleep(0.1)


def _transient(exc: BaseException) -> bool:
    """An admin error a cluster gives while it settles (retried), not a refusal (raised)."""
    if isinstance(exc, UnknownBrokerIdError):
        # kafka-python names a controller its metadata does not list yet as not retriable.
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _ensure(settings: KafkaSettings, topics: Iterable[Topic]) -> None:
    # A refused TLS handshake or SASL login named now, not as a bootstrap timeout later.
    check_broker(settings)
    deadline = time.monotonic() + SETUP_RETRY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            _ensure_once(settings, list(topics))
            return
        except KafkaError as exc:
            if not _transient(exc) or time.monotonic() > deadline:
                raise
            log.warning("topic set-up attempt %d: %r; retrying with a new client", attempt, exc)
            time.sleep(min(2.0, 0.2 * attempt))


def _ensure_once(settings: KafkaSettings, topics: list[Topic]) -> None:
    needed = broker_max_message_bytes(settings.max_event_bytes)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="medbench-admin",
        **client_options(settings),
    )
    try:
        names = _names(settings, topics)
        existing = set(admin.list_topics())
        for name in names:
            if name in existing:
                continue
            new = NewTopic(
                name,
                settings.partitions,
                settings.replication_factor,
                topic_configs={MAX_MESSAGE_BYTES: str(needed)},
            )
            # One at a time: a batch fails whole when a concurrent service created one of them.
            try:
                admin.create_topics([new])
                log.info("created topic %s", name)
            except TopicAlreadyExistsError:
                pass
        _await_leaders(admin, names, 1, LEADERS_TIMEOUT_S)
        described = admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, n, configs=[MAX_MESSAGE_BYTES])
                for n in names
            ]
        )
        small = {
            n: got for n in names if (got := _admitted(described, n)) is not None and got < needed
        }
        if small:
            listed = ", ".join(f"{n} ({got})" for n, got in sorted(small.items()))
            raise TopicTooSmall(
                f"topics admit smaller records than events of MEDBENCH_KAFKA__MAX_EVENT_BYTES="
                f"{settings.max_event_bytes} need (max.message.bytes >= {needed}): {listed}; "
                "raise their max.message.bytes or lower the setting"
            )
    finally:
        admin.close()


async def ensure_topics(settings: KafkaSettings, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Creates every missing topic and dead-letter topic; raises TopicTooSmall when a topic
    admits smaller records than the configured event limit."""
    await asyncio.to_thread(_ensure, settings, list(topics))
