"""Errors that say what is missing: a track whose items have no key cannot be pooled, and the
rotator says so instead of calling the bank empty."""

from __future__ import annotations

import pytest

from medbench_runtime.errors import InvalidArgument
from rotator.usecases.rotation import RotationRequest
from tests.services.rotator.test_usecases import sample_rows, stocked


def unkeyed_rows() -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k != "reference"} for row in sample_rows()]


async def test_rotating_a_track_whose_items_have_no_key_says_how_many_and_what_to_do() -> None:
    rows = unkeyed_rows()
    rotator = await stocked(rows)
    expected = f"{len(rows)} items of track llm have no key; import keys to pool them"
    with pytest.raises(InvalidArgument, match=expected):
        await rotator.rotation.rotate(RotationRequest("llm", "upload", "2026-q1"))
    with pytest.raises(InvalidArgument, match=expected):
        await rotator.rotation.publish("llm-unkeyed", "llm", "upload")
    assert not rotator.pools.stored


async def test_a_track_with_no_items_at_all_is_still_called_empty() -> None:
    rotator = await stocked(unkeyed_rows())
    with pytest.raises(InvalidArgument, match="the bank has no items for track multimodal"):
        await rotator.rotation.publish("mm-empty", "multimodal", "upload")
