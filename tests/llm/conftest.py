"""tests/llm: the real model (make test-llm). Marked `llm` and left out of every run that does
not select the marker (`make test` runs `pytest` bare: these tests are deselected there)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "llm: needs the real model server build (make test-llm; LLM_DIR)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects this directory's tests unless the marker expression names `llm`."""
    if "llm" in (config.option.markexpr or ""):
        return
    ours = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item not in ours]
