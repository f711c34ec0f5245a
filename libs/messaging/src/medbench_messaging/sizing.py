"""Every event fits the broker, by design: the event size rule.

- One setting, ``MEDBENCH_KAFKA__MAX_EVENT_BYTES`` (1,000,000 by default), bounds the encoded
  value of every event. Topics are created with ``max.message.bytes`` of that plus
  ``RECORD_OVERHEAD_BYTES`` (key, headers, record framing), and producers refuse anything larger
  before it reaches the broker.
- A batch event (responses, scores, judge tasks) larger than the limit is split, where it is
  made, into parts that each fit: part ``k`` of ``n`` has ``.p<k>`` appended to its event id and
  its batch id, so every part has its own deterministic identity and a redelivered input makes
  the same parts again (consumers stay idempotent).
- Every element a batch can hold is bounded so one element always fits with room to spare: an
  answer is at most ``MAX_ANSWER_BYTES`` (upload limit and API-mode cut alike), a parsed answer
  or score note at most ``MAX_NOTE_BYTES``.
"""

from __future__ import annotations

from google.protobuf.message import Message

DEFAULT_MAX_EVENT_BYTES = 1_000_000
# What a record carries besides its value, within the broker's max.message.bytes: key (a
# submission id), headers (type, event id, trace context, dead-letter reasons of up to 2,000
# bytes) and the record batch framing.
RECORD_OVERHEAD_BYTES = 16 * 1024
# The smallest limit that still holds one element of every kind with its envelope.
MIN_MAX_EVENT_BYTES = 256 * 1024
# One answer (UTF-8 bytes): the upload limit, and where an API-mode answer is cut.
MAX_ANSWER_BYTES = 32 * 1024
# A parsed answer or note carried with a score (display only).
MAX_NOTE_BYTES = 2 * 1024
# Room kept in each part for the ".p<k>" suffixes of its ids.
_SUFFIX_ROOM = 64


class EventTooLarge(ValueError):
    """An event that cannot be made to fit the limit (never retryable)."""


def broker_max_message_bytes(max_event_bytes: int) -> int:
    """The ``max.message.bytes`` a topic needs for events of at most ``max_event_bytes``."""
    return max_event_bytes + RECORD_OVERHEAD_BYTES


def clip_utf8(text: str, most: int) -> str:
    """The longest prefix of text whose UTF-8 encoding is at most ``most`` bytes."""
    raw = text.encode()
    if len(raw) <= most:
        return text
    return raw[:most].decode(errors="ignore")


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _element_cost(field_number: int, element: Message) -> int:
    """Bytes an element adds to its message: tag, length prefix and body."""
    body: int = element.ByteSize()
    return _varint_len(field_number << 3) + _varint_len(body) + body


def split_to_fit(message: Message, batch_field: str | None, limit: int) -> list[Message]:
    """The message itself when it fits, else parts of at most ``limit`` bytes each.

    Parts keep every other field; ``event_id`` and ``batch_id`` (where the type has them) get
    ``.p<k>``. Raises EventTooLarge when the type has no batch field or one element alone with
    the envelope exceeds the limit. Deterministic: the same message and limit give the same parts.
    """
    size = message.ByteSize()
    if size <= limit:
        return [message]
    name = type(message).DESCRIPTOR.full_name
    if batch_field is None:
        raise EventTooLarge(f"{name} is {size} bytes; the event limit is {limit}")
    field = message.DESCRIPTOR.fields_by_name[batch_field]
    elements = list(getattr(message, batch_field))
    envelope = type(message)()
    envelope.CopyFrom(message)
    envelope.ClearField(batch_field)
    room = limit - envelope.ByteSize() - _SUFFIX_ROOM
    groups: list[list[Message]] = [[]]
    used = 0
    for index, element in enumerate(elements):
        cost = _element_cost(field.number, element)
        if cost > room:
            raise EventTooLarge(
                f"{name}.{batch_field}[{index}] is {cost} bytes; with the envelope it exceeds "
                f"the event limit of {limit}"
            )
        if used + cost > room and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(element)
        used += cost
    parts: list[Message] = []
    for k, group in enumerate(groups):
        part = type(message)()
        part.CopyFrom(envelope)
        getattr(part, batch_field).extend(group)
        _suffix(part, f".p{k}")
        parts.append(part)
    return parts


def _suffix(part: Message, suffix: str) -> None:
    for id_field in ("event_id", "batch_id"):
        if id_field in part.DESCRIPTOR.fields_by_name:
            setattr(part, id_field, getattr(part, id_field) + suffix)
