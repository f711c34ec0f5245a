"""Every Kafka topic of the platform, declared once with its message type."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from medbench.dispatch.v1 import dispatch_events_pb2
from medbench.inference.v1 import inference_events_pb2
from medbench.scoring.v1 import scoring_events_pb2
from medbench.submission.v1 import submission_events_pb2
from medbench.taskpool.v1 import taskpool_events_pb2

DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    """A topic name and the protobuf type its messages carry."""

    name: str
    message_type: type[Message]
    # The repeated field a too-large event is split on (see medbench_messaging.sizing); None
    # for events that are small by construction.
    batch_field: str | None = None

    def full_name(self, prefix: str) -> str:
        """The broker-side name under a deployment's prefix."""
        return f"{prefix}{self.name}"

    def dead_letter_name(self, prefix: str) -> str:
        """Name of this topic's dead-letter twin."""
        return f"{prefix}{self.name}{DEAD_LETTER_SUFFIX}"


SUBMISSION_CREATED = Topic(
    "medbench.submission.submission-created.v1", submission_events_pb2.SubmissionCreated
)
SUBMISSION_COMPLETED = Topic(
    "medbench.submission.submission-completed.v1", submission_events_pb2.SubmissionCompleted
)
RESPONSE_RECORDED = Topic(
    "medbench.inference.response-recorded.v1",
    inference_events_pb2.ResponsesRecorded,
    batch_field="responses",
)
ITEM_SCORED = Topic(
    "medbench.scoring.item-scored.v1", scoring_events_pb2.ItemsScored, batch_field="scores"
)
JUDGE_REQUESTED = Topic(
    "medbench.scoring.judge-requested.v1", scoring_events_pb2.JudgeRequested, batch_field="tasks"
)
POOL_ROTATED = Topic("medbench.taskpool.pool-rotated.v1", taskpool_events_pb2.PoolRotated)
DISPATCH_PROGRESSED = Topic(
    "medbench.dispatch.dispatch-progressed.v1", dispatch_events_pb2.DispatchProgressed
)

ALL_TOPICS: tuple[Topic, ...] = (
    SUBMISSION_CREATED,
    SUBMISSION_COMPLETED,
    RESPONSE_RECORDED,
    ITEM_SCORED,
    JUDGE_REQUESTED,
    POOL_ROTATED,
    DISPATCH_PROGRESSED,
)
BY_NAME = {t.name: t for t in ALL_TOPICS}
