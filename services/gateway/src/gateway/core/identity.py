"""Identity rules: tenant ids, display names, quota overrides and certificate subjects (pure)."""

from __future__ import annotations

import re

from gateway.core.quotas import MAX_QUOTA
from medbench_runtime.errors import InvalidArgument

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CERT_SUBJECT = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,254}$")
MAX_NAME = 200
MAX_SUBJECTS = 20
DEFAULT_TTL_DAYS = 365
MAX_TTL_DAYS = 730


def check_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID.fullmatch(tenant_id):
        raise InvalidArgument(
            f"tenant_id {tenant_id[:70]!r} is malformed: 1-63 of [a-z0-9-], starting with a "
            f"letter or digit"
        )
    return tenant_id


def check_name(field: str, value: str) -> str:
    if len(value) > MAX_NAME:
        raise InvalidArgument(f"{field} is longer than {MAX_NAME} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"{field} contains control characters")
    return value


def check_quotas(values: dict[str, int]) -> dict[str, int]:
    for field, value in values.items():
        if value < 0 or value > MAX_QUOTA:
            raise InvalidArgument(f"quotas.{field} must be between 0 and {MAX_QUOTA}")
    return values


def check_subjects(subjects: list[str]) -> list[str]:
    if len(subjects) > MAX_SUBJECTS:
        raise InvalidArgument(f"certificate_subjects holds at most {MAX_SUBJECTS} entries")
    for subject in subjects:
        if not CERT_SUBJECT.fullmatch(subject):
            raise InvalidArgument(
                "certificate_subjects entries are 1-255 printable ASCII characters"
            )
    return sorted(set(subjects))


def check_ttl_days(ttl_days: int) -> int:
    """The key lifetime in days (0: the default)."""
    if ttl_days < 0 or ttl_days > MAX_TTL_DAYS:
        raise InvalidArgument(f"ttl_days must be between 1 and {MAX_TTL_DAYS} (0: 365)")
    return ttl_days or DEFAULT_TTL_DAYS
