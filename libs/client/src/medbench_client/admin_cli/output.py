"""What the operator CLI prints: one JSON document (--json) or a table on stdout, and how a
protobuf message becomes stable JSON (proto field names, short lower-case enum names, ISO 8601
UTC times, numbers as numbers)."""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["emit", "enum_name", "message_dict", "stamp", "table", "when"]


def _width(text: str) -> int:
    """Display width in a terminal (CJK characters take two columns)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Rows under a header, columns aligned (those in right to the right)."""
    widths = [max(_width(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def cell(i: int, text: str) -> str:
        gap = " " * max(0, widths[i] - _width(text))
        return gap + text if i in right else text + gap

    return [
        "  ".join(cell(i, str(c)) for i, c in enumerate(row)).rstrip() for row in [header, *rows]
    ]


def emit(args: argparse.Namespace, data: Any, human: str | Sequence[str]) -> None:
    """data as one JSON document with --json, else the human text, on stdout."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False), flush=True)
    else:
        print(human if isinstance(human, str) else "\n".join(human), flush=True)


def stamp(value: Timestamp) -> str | None:
    """A time stamp as ISO 8601 UTC ("...Z"); None when unset (zero)."""
    if not value.seconds and not value.nanos:
        return None
    text: str = value.ToDatetime(tzinfo=UTC).isoformat()
    return text.replace("+00:00", "Z")


def when(value: Timestamp) -> str:
    """A time stamp for a table: "YYYY-MM-DD HH:MM:SS" (UTC), "-" when unset."""
    text = stamp(value)
    return text[:19].replace("T", " ") if text else "-"


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def enum_name(enum: Any, value: int) -> str:
    """An enum value without its type's prefix, lower case: Role.ROLE_MAINTAINER -> maintainer
    (unknown numbers as their decimal)."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(_upper_snake(enum.DESCRIPTOR.name) + "_").lower()


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return stamp(value)
        return message_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        found = enum.values_by_number.get(value)
        if found is None:
            return value
        return found.name.removeprefix(_upper_snake(enum.name) + "_").lower()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return None  # never printed (images, secrets)
    return value


def message_dict(message: Message) -> dict[str, Any]:
    """Every field of message (unset ones with their default), by its proto name."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out
