"""Creates the platform's topics and their dead-letter twins (idempotent), and checks that every
topic admits the largest event the platform sends (see medbench_messaging.sizing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from medbench_messaging.sizing import broker_max_message_bytes
from medbench_messaging.topics import ALL_TOPICS, Topic
from medbench_runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = "max.message.bytes"


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


def _ensure(settings: KafkaSettings, topics: Iterable[Topic]) -> None:
    needed = broker_max_message_bytes(settings.max_event_bytes)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="medbench-admin"
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
