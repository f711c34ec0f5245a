"""One topic per consumer group in a process (pure: the Infrastructure is not connected)."""

from __future__ import annotations

from typing import Any

import pytest

from medbench_messaging import topics
from medbench_runtime.settings import ServiceSettings
from medbench_storage.infra import Infrastructure


class _Quarantine:
    async def hold(self, *args: Any, **kwargs: Any) -> None:
        return None


def _infra() -> Infrastructure:
    unused: Any = None
    return Infrastructure(ServiceSettings(), unused, unused, unused, unused, unused, _Quarantine())  # type: ignore[arg-type]


async def _handler(message: Any) -> None:
    return None


def test_a_group_takes_one_topic_only() -> None:
    infra = _infra()
    infra.consumer(topics.SUBMISSION_COMPLETED, group_id="gateway", handler=_handler)
    with pytest.raises(ValueError, match="already consumes .*submission-completed"):
        infra.consumer(topics.DISPATCH_PROGRESSED, group_id="gateway", handler=_handler)
    # Its own group, or the same topic again (a second worker of that topic), are fine.
    infra.consumer(topics.DISPATCH_PROGRESSED, group_id="gateway-progress", handler=_handler)
    infra.consumer(topics.SUBMISSION_COMPLETED, group_id="gateway", handler=_handler)
