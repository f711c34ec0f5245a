"""Secrets at rest: envelope encryption of the small secrets the platform must keep (a partner
endpoint's API key).

Every secret gets a fresh random 256-bit data key and is sealed with AES-256-GCM under it; the
data key is wrapped (AES-256-GCM again) by a key-encryption key (KEK) the deployment provides.
Both carry associated data naming what the secret is (its purpose, tenant and submission), so a
sealed secret copied next to another submission does not open. Rotation re-wraps the data keys
under the current KEK; the sealed secrets themselves never change.

KEKs come from the settings (MEDBENCH_SECRETS__KEYS, a Kubernetes Secret in production) through
LocalKeys; a KMS can stand in for it later behind the KeyEncryptionKeys protocol.

`python -m medbench_storage.secrets new-key ID` prints a new key entry for the settings;
`python -m medbench_storage.endpoint_keys rewrap` re-wraps every stored secret under the current
key (it lives with the store it rewrites, so this module imports no store).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, SecretStr

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
KEYS_SETTING = "MEDBENCH_SECRETS__KEYS"
CURRENT_SETTING = "MEDBENCH_SECRETS__CURRENT"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SecretsSettings(BaseModel):
    """Key-encryption keys of the secrets the platform keeps (gateway and dispatcher)."""

    # One or more "<id>:<base64 of 32 random bytes>" entries, separated by commas (or
    # whitespace). Old keys stay listed until `rewrap` has moved every secret off them.
    keys: SecretStr = SecretStr("")
    # Id of the key new secrets are wrapped with; "" = the first listed.
    current: str = ""
    # Days a STALLED API-mode run keeps its endpoint key for a resume; then the run fails and
    # the key is deleted (dispatcher).
    stalled_retention_days: float = 7.0


class SecretsError(Exception):
    """Base of the errors of this module; messages never contain key material."""


class SecretsNotConfigured(SecretsError):
    """The key-encryption keys are missing or malformed; the message names the setting."""


class CannotOpen(SecretsError):
    """A sealed secret does not open: unknown key id, wrong key, wrong associated data, or
    tampered bytes (AES-GCM cannot tell these apart, on purpose)."""


class KeyEncryptionKeys(Protocol):
    """Wraps and unwraps data keys. LocalKeys holds them in memory; a KMS client can implement
    the same members."""

    @property
    def current_id(self) -> str:
        """Id of the key that wraps new data keys."""
        ...

    def knows(self, key_id: str) -> bool:
        """Whether data keys wrapped under key_id can be unwrapped."""
        ...

    async def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """The data key wrapped under the current key: (key id, wrapped bytes)."""
        ...

    async def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; CannotOpen when key_id is unknown or the bytes or aad do not match."""
        ...


def parse_keys(text: str) -> dict[str, bytes]:
    """{id: key} from "<id>:<base64>" entries; SecretsNotConfigured naming the setting."""
    keys: dict[str, bytes] = {}
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise SecretsNotConfigured(
                f"{KEYS_SETTING}: each entry must be <id>:<base64 key> with an id of 1-64 "
                f"letters, digits, '_', '.' or '-' (entry {len(keys) + 1} is not)"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise SecretsNotConfigured(
                f"{KEYS_SETTING}: key {key_id!r} must be {KEY_BYTES} random bytes in base64 "
                f"(make one with `python -m medbench_storage.secrets new-key {key_id}`)"
            )
        if key_id in keys:
            raise SecretsNotConfigured(f"{KEYS_SETTING}: key id {key_id!r} is listed twice")
        keys[key_id] = key
    return keys


def new_key_entry(key_id: str) -> str:
    """A fresh "<id>:<base64>" entry for MEDBENCH_SECRETS__KEYS."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r}: 1-64 letters, digits, '_', '.' or '-'")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class LocalKeys:
    """Key-encryption keys held in process memory, from the deployment's settings."""

    def __init__(self, keys: Mapping[str, bytes], current: str = "") -> None:
        if not keys:
            raise SecretsNotConfigured(
                f"{KEYS_SETTING} is not set: the gateway and the dispatcher need a key-encryption "
                f"key for partners' endpoint API keys (`python -m medbench_storage.secrets "
                f"new-key k1` makes one)"
            )
        current = current or next(iter(keys))
        if current not in keys:
            raise SecretsNotConfigured(
                f"{CURRENT_SETTING}={current!r} is not among the ids in {KEYS_SETTING} "
                f"({', '.join(sorted(keys))})"
            )
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise SecretsNotConfigured(
                    f"{KEYS_SETTING}: key {key_id!r} is not {KEY_BYTES} bytes"
                )
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = current

    @classmethod
    def from_settings(cls, settings: SecretsSettings) -> LocalKeys:
        return cls(parse_keys(settings.keys.get_secret_value()), settings.current.strip())

    @property
    def current_id(self) -> str:
        return self._current

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    async def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return self._current, nonce + self._keys[self._current].encrypt(nonce, data_key, aad)

    async def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = self._keys.get(key_id)
        if kek is None:
            raise CannotOpen(f"key-encryption key {key_id!r} is not in {KEYS_SETTING}")
        return _decrypt(kek, wrapped, aad)


@dataclass(frozen=True)
class Sealed:
    """One sealed secret: what is stored (the plaintext and its data key never are)."""

    key_id: str
    wrapped_key: bytes  # nonce + AES-GCM(data key) under the KEK key_id
    ciphertext: bytes  # nonce + AES-GCM(secret) under the data key
    version: int = VERSION


def associated_data(purpose: str, *binding: str) -> bytes:
    """Unambiguous associated data: the purpose and what the secret belongs to."""
    if not purpose or not all(binding):
        raise ValueError("a sealed secret is bound to a purpose and non-empty identifiers")
    return json.dumps(["medbench-secret", VERSION, purpose, *binding]).encode()


def _wrap_aad(aad: bytes) -> bytes:
    # The data key's wrap is bound to the same secret, in a domain of its own.
    return b"data-key\x00" + aad


class Envelope:
    """Seals and opens secrets with per-secret data keys wrapped by the deployment's KEKs."""

    def __init__(self, keys: KeyEncryptionKeys) -> None:
        self.keys = keys

    async def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)
        key_id, wrapped = await self.keys.wrap(data_key, _wrap_aad(aad))
        return Sealed(key_id, wrapped, ciphertext)

    async def open(self, sealed: Sealed, aad: bytes) -> bytes:
        if sealed.version != VERSION:
            raise CannotOpen(f"sealed secret version {sealed.version} is not {VERSION}")
        data_key = await self.keys.unwrap(sealed.key_id, sealed.wrapped_key, _wrap_aad(aad))
        return _decrypt(AESGCM(data_key), sealed.ciphertext, aad)

    async def rewrap(self, sealed: Sealed, aad: bytes) -> Sealed | None:
        """The same secret with its data key wrapped under the current KEK; None when it
        already is. The data key is checked against the ciphertext before anything changes."""
        if sealed.key_id == self.keys.current_id:
            return None
        data_key = await self.keys.unwrap(sealed.key_id, sealed.wrapped_key, _wrap_aad(aad))
        _decrypt(AESGCM(data_key), sealed.ciphertext, aad)
        key_id, wrapped = await self.keys.wrap(data_key, _wrap_aad(aad))
        return Sealed(key_id, wrapped, sealed.ciphertext, sealed.version)


def _decrypt(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise CannotOpen("sealed bytes are too short")
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise CannotOpen("sealed bytes do not open with this key and associated data") from None


def envelope_from_settings(settings: SecretsSettings) -> Envelope:
    """The envelope of a service's settings; SecretsNotConfigured (naming the setting) at start
    when no usable key is configured."""
    return Envelope(LocalKeys.from_settings(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medbench_storage.secrets", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new_key = commands.add_parser("new-key", help="print a new <id>:<base64> key entry")
    new_key.add_argument("key_id")
    args = parser.parse_args(argv)
    print(new_key_entry(args.key_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
