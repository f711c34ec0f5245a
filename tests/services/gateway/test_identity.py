"""Tenant ids (pure)."""

from __future__ import annotations

import pytest

from gateway.core.identity import check_tenant_id
from medbench_runtime.errors import InvalidArgument


@pytest.mark.parametrize("value", ["", "Hospital-A", "-a", "a b", "hospital-a\n", "a" * 64])
def test_malformed_tenant_ids_are_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument, match="tenant_id"):
        check_tenant_id(value)


def test_well_formed_tenant_ids_pass() -> None:
    assert check_tenant_id("hospital-a") == "hospital-a"
    assert check_tenant_id("a" * 63) == "a" * 63
