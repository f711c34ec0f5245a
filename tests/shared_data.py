"""Public data the tests read from the shared folder beside the repository (never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder (MEDBENCH_SHARED_DIR, default ../shared).

    Skips the calling test, with the reason, when the folder is not there: the data is not
    ours to ship, so a checkout without it cannot run these checks.
    """
    root = Path(os.environ.get("MEDBENCH_SHARED_DIR", REPO.parent / "shared"))
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set MEDBENCH_SHARED_DIR)")
    return path
