"""A model's release date: empty, or a real calendar date written YYYY-MM-DD."""

from __future__ import annotations

import pytest

from gateway.core.uploads import check_date
from medbench_runtime.errors import InvalidArgument


@pytest.mark.parametrize("value", ["", "2026-09-30", "2024-02-29"])
def test_empty_or_real_dates_pass(value: str) -> None:
    check_date("model.release_date", value)


@pytest.mark.parametrize(
    "value", ["2026-9-30", "2026-02-30", "20260930", "2026-09-30T00:00", "yesterday", "2025-02-29"]
)
def test_anything_else_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"model\.release_date must be a date"):
        check_date("model.release_date", value)
