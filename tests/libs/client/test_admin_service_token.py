"""`medbench admin service-token` and the services part of `medbench admin roles` (no server)."""

from __future__ import annotations

import asyncio
import json

import pytest

from medbench_client.admin_cli.main import main
from medbench_runtime.auth import Authenticator, hash_secret, parse_service_token


def test_a_new_service_token_is_admitted_by_the_hash_printed_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["service-token", "dispatcher", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert parse_service_token(printed["token"]) == "dispatcher"
    assert printed["sha256"] == hash_secret(printed["token"])
    auth = Authenticator("", None, service_token_hashes={"dispatcher": printed["sha256"]})
    metadata = [("authorization", f"Bearer {printed['token']}")]
    assert asyncio.run(auth.authenticate(metadata)).service == "dispatcher"
    assert main(["service-token", "dispatcher", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token"] != printed["token"]


def test_roles_list_what_each_service_token_opens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roles", "--json"]) == 0
    services = {s["service"]: s["rpcs"] for s in json.loads(capsys.readouterr().out)["services"]}
    assert services["dispatcher"] == ["TaskPoolService.GetPrompts", "TaskPoolService.GetImage"]
    assert "TaskPoolService.AssignItems" in services["gateway"]
    assert services["metric_scorer"] == []
    with pytest.raises(SystemExit) as refused:
        main(["service-token", "intruder"])
    assert refused.value.code == 2
