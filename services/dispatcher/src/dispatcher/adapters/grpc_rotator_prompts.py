"""RotatorPrompts: a submission's prompts from the rotator's TaskPoolService.GetPrompts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from dispatcher.core.ports import PromptItem
from medbench.taskpool.v1 import taskpool_service_pb2


class RotatorPrompts:
    """Prompts, one list per streamed batch (errors of the stream pass through)."""

    def __init__(self, rotator: Any) -> None:
        """rotator: a TaskPoolServiceStub (or anything with its GetPrompts)."""
        self._rotator = rotator

    async def batches(self, submission_id: str) -> AsyncIterator[Sequence[PromptItem]]:
        request = taskpool_service_pb2.GetPromptsRequest(
            submission_id=submission_id, include_prompts=True
        )
        async for batch in self._rotator.GetPrompts(request):
            yield [
                PromptItem(
                    item_id=it.item_id,
                    ordinal=it.ordinal,
                    dataset=it.dataset,
                    messages=tuple((m.role, m.content) for m in it.messages),
                    question=it.question,
                    image_ids=tuple(it.image_ids),
                    prompt_hash=it.prompt_hash,
                    canary=it.canary,
                    answer_format=it.answer_format,
                )
                for it in batch.items
            ]
