"""datetime <-> google.protobuf.Timestamp, one rule for every service."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utc(value: datetime) -> datetime:
    """value as an aware datetime in UTC (a naive datetime is UTC, as MongoDB returns them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """The Timestamp of value (a naive datetime is UTC, as MongoDB returns them); None for None."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(utc(value))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp."""
    value: datetime = ts.ToDatetime(tzinfo=UTC)
    return value
