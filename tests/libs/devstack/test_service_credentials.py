"""The local stack's credentials (pure: the stack is built, not started): each service calls
with its own token, every service admits all of them by hash only, and only the gateway holds
the bootstrap maintainer key, as in the chart."""

from __future__ import annotations

import json
from pathlib import Path

from medbench_devstack.services import ServiceStack
from medbench_runtime.auth import hash_secret, parse_service_token


def _stack(tmp_path: Path, extra_env: dict[str, str] | None = None) -> ServiceStack:
    return ServiceStack(tmp_path, "mongodb://m/", "db1", "127.0.0.1:9", "p.", extra_env)


def test_each_service_has_its_own_token_and_admits_the_others_by_hash(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    tokens = {name: stack.env(name)["MEDBENCH_AUTH__SERVICE_TOKEN"] for name in stack.names}
    assert len(set(tokens.values())) == len(tokens) == 6
    for name, token in tokens.items():
        assert parse_service_token(token) == name
        hashes = json.loads(stack.env(name)["MEDBENCH_AUTH__SERVICE_TOKEN_HASHES"])
        assert hashes == {n: hash_secret(t) for n, t in stack.service_tokens.items()}
        assert not [t for t in tokens.values() if t in json.dumps(hashes)]
    assert stack.service_token == tokens["gateway"]


def test_only_the_gateway_holds_the_bootstrap_key(tmp_path: Path) -> None:
    pinned = {"MEDBENCH_AUTH__BOOTSTRAP_KEY": "mbk_" + "0" * 16 + "_" + "k" * 43}
    stack = _stack(tmp_path, pinned)
    holders = [n for n in stack.names if "MEDBENCH_AUTH__BOOTSTRAP_KEY" in stack.env(n)]
    assert holders == ["gateway"]
    assert stack.env("gateway")["MEDBENCH_AUTH__BOOTSTRAP_KEY"] == stack.admin_key


def test_a_pinned_seed_gives_the_same_tokens_on_every_start(tmp_path: Path) -> None:
    first = _stack(tmp_path / "a", {"MEDBENCH_AUTH__SERVICE_TOKEN": "seed-of-this-machine"})
    again = _stack(tmp_path / "b", {"MEDBENCH_AUTH__SERVICE_TOKEN": "seed-of-this-machine"})
    other = _stack(tmp_path / "c")
    assert first.service_tokens == again.service_tokens
    assert first.env("rotator")["MEDBENCH_AUTH__SERVICE_TOKEN"] == first.service_tokens["rotator"]
    assert not set(first.service_tokens.values()) & set(other.service_tokens.values())
