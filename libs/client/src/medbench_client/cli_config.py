"""Where the partner CLI finds its gateway and API key: flags, environment, config file.

The config file is JSON at `$XDG_CONFIG_HOME/medbench/config.json` (`~/.config/medbench/` when
XDG_CONFIG_HOME is unset or not absolute), written with mode 0600 in a 0700 folder:

    {"default_profile": "default",
     "profiles": {"default": {"gateway": "host:443", "api_key": "mbk_...", "tls": true}}}

Each setting is taken from the first of: the command-line flag, the environment variable
(MEDBENCH_GATEWAY, MEDBENCH_API_KEY, MEDBENCH_TLS, MEDBENCH_CA_FILE), the profile in the file.
The profile is --profile, else MEDBENCH_PROFILE, else the file's default_profile, else "default".
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medbench_client.cli_files import write_json_atomically

ENV_GATEWAY = "MEDBENCH_GATEWAY"
ENV_KEY = "MEDBENCH_API_KEY"
ENV_PROFILE = "MEDBENCH_PROFILE"
ENV_TLS = "MEDBENCH_TLS"
ENV_CA_FILE = "MEDBENCH_CA_FILE"
DEFAULT_PROFILE = "default"
KEY_PATTERN = re.compile(r"^mbk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
PROFILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """The configuration is missing, malformed or unsafe to use (exit code 2)."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file: $XDG_CONFIG_HOME/medbench/config.json, else ~/.config/medbench/."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "medbench" / "config.json"


def key_id(key: str) -> str:
    """The public part of a key ("mbk_<key id>"), safe to print; "" for a malformed key."""
    match = KEY_PATTERN.fullmatch(key)
    return f"mbk_{match.group(1)}" if match else ""


def check_key(key: str) -> str:
    """key stripped; ConfigError unless it looks like "mbk_<16 hex>_<43 characters>"."""
    key = key.strip()
    if not KEY_PATTERN.fullmatch(key):
        raise ConfigError(
            "the API key does not look like a MedBench key (mbk_<16 hex>_<43 characters>)"
        )
    return key


def check_profile(name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"profile name {name!r} must be 1-64 characters of [A-Za-z0-9._-]")
    return name


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def load(path: Path) -> dict[str, Any]:
    """The config file's content ({"profiles": {}} when absent); ConfigError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"profiles": {}}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles", {}), dict):
        raise ConfigError(f"{path} must hold an object with a 'profiles' object")
    data.setdefault("profiles", {})
    for name, profile in data["profiles"].items():
        if not isinstance(profile, dict):
            raise ConfigError(f"{path}: profile {name!r} must be an object")
    return data


def loose_permissions(path: Path) -> bool:
    """Whether others than the owner may read or write the file (a key inside is exposed)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def write(path: Path, data: Mapping[str, Any]) -> None:
    """Writes the file atomically with mode 0600 (folder 0700 when created)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json_atomically(path, data, mode=0o600)
    os.chmod(path, 0o600)


def save_profile(
    path: Path,
    name: str,
    *,
    gateway: str | None = None,
    api_key: str | None = None,
    tls: bool | None = None,
    ca_file: str | None = None,
    make_default: bool = False,
) -> dict[str, Any]:
    """Sets the given values of profile name (others kept); the first profile written becomes
    the default. Returns the profile as stored."""
    check_profile(name)
    data = load(path)
    profile = dict(data["profiles"].get(name, {}))
    if gateway is not None:
        profile["gateway"] = gateway.strip()
    if api_key is not None:
        profile["api_key"] = check_key(api_key)
    if tls is not None:
        profile["tls"] = tls
    if ca_file is not None:
        profile["ca_file"] = str(Path(ca_file).expanduser().resolve()) if ca_file else ""
    data["profiles"][name] = profile
    if make_default or not data.get("default_profile"):
        data["default_profile"] = name
    write(path, data)
    return profile


@dataclass(frozen=True)
class Settings:
    """What a command connects with, and where each value came from (flag, env, config)."""

    gateway: str
    api_key: str
    profile: str
    path: Path
    tls: bool = False
    ca_file: str = ""
    sources: dict[str, str] = field(default_factory=dict)


def resolve(
    *,
    gateway: str | None = None,
    api_key: str | None = None,
    profile: str | None = None,
    tls: bool | None = None,
    ca_file: str | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    """Flags (the keyword arguments; None = not given) > environment > config file."""
    env = os.environ if env is None else env
    path = path or config_path(env)
    data = load(path)
    if profile:
        name, named = check_profile(profile), "--profile"
    elif env.get(ENV_PROFILE):
        name, named = check_profile(env[ENV_PROFILE]), ENV_PROFILE
    else:
        name, named = str(data.get("default_profile") or DEFAULT_PROFILE), ""
    stored = data["profiles"].get(name)
    sources: dict[str, str] = {}

    def pick(what: str, flag: object, env_name: str, stored_name: str) -> Any:
        if flag is not None and flag != "":
            sources[what] = "flag"
            return flag
        if env.get(env_name):
            sources[what] = env_name
            return env[env_name]
        if stored is not None and stored.get(stored_name) not in (None, ""):
            sources[what] = f"profile {name} in {path}"
            return stored[stored_name]
        return None

    chosen_gateway = pick("gateway", gateway, ENV_GATEWAY, "gateway")
    chosen_key = pick("api_key", api_key, ENV_KEY, "api_key")
    chosen_tls = pick("tls", tls, ENV_TLS, "tls")
    chosen_ca = pick("ca_file", ca_file, ENV_CA_FILE, "ca_file")
    if named and stored is None and (chosen_gateway is None or chosen_key is None):
        raise ConfigError(f"profile {name!r} (from {named}) is not in {path}")
    if chosen_gateway is None:
        raise ConfigError(
            f"no gateway address: pass --gateway HOST:PORT, set {ENV_GATEWAY} or run "
            "`medbench configure --gateway HOST:PORT`"
        )
    if chosen_key is None:
        raise ConfigError(
            f"no API key: set {ENV_KEY}, run `medbench configure --key -` (reads it from "
            "stdin) or pass --key"
        )
    key = str(chosen_key).strip()
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ConfigError("the API key holds characters that cannot be sent (spaces, non-ASCII)")
    if (
        sources.get("api_key", "").startswith("profile")
        and path.exists()
        and loose_permissions(path)
    ):
        raise ConfigError(
            f"{path} holds an API key and can be read by other users; run `chmod 600 {path}`"
        )
    return Settings(
        gateway=str(chosen_gateway).strip(),
        api_key=key,
        profile=name,
        path=path,
        tls=_bool("tls", chosen_tls) if chosen_tls is not None else False,
        ca_file=str(chosen_ca or ""),
        sources=sources,
    )
