"""Creates the platform's topics and their dead-letter twins (idempotent)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from medbench_messaging.topics import ALL_TOPICS, Topic
from medbench_runtime.settings import KafkaSettings

log = logging.getLogger(__name__)


def _ensure(settings: KafkaSettings, topics: Iterable[Topic]) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id="medbench-admin"
    )
    try:
        existing = set(admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            for name in (
                topic.full_name(settings.topic_prefix),
                topic.dead_letter_name(settings.topic_prefix),
            ):
                if name not in existing:
                    wanted.append(NewTopic(name, settings.partitions, settings.replication_factor))
        for new in wanted:
            # One at a time: a batch fails whole when a concurrent service created one of them.
            try:
                admin.create_topics([new])
                log.info("created topic %s", new.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


async def ensure_topics(settings: KafkaSettings, topics: Iterable[Topic] = ALL_TOPICS) -> None:
    """Creates every missing topic and dead-letter topic."""
    await asyncio.to_thread(_ensure, settings, list(topics))
