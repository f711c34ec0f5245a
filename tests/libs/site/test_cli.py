"""medbench-site's errors: each names what is wrong and exits with its own code."""

from __future__ import annotations

from pathlib import Path

import pytest
from medbench_site.__main__ import main

from medbench_devstack.ports import free_port


def test_no_credential_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDBENCH_API_KEY", raising=False)
    monkeypatch.delenv("MEDBENCH_AUTH__SERVICE_TOKEN", raising=False)
    assert main(["build", "--out", str(tmp_path)]) == 2
    assert "no credential" in capsys.readouterr().err


def test_an_unreachable_platform_is_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    code = main(
        ["build", "--out", str(out), "--aggregator", nowhere, "--rotator", nowhere, "--key", "k"]
    )
    assert code == 5
    err = capsys.readouterr().err
    assert nowhere in err and "UNAVAILABLE" in err
    assert not (out / "site").exists()
