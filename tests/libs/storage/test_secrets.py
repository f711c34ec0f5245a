"""Envelope encryption of secrets at rest (pure: no database)."""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest

from medbench_storage.secrets import (
    KEY_BYTES,
    CannotOpen,
    Envelope,
    LocalKeys,
    SecretsNotConfigured,
    SecretsSettings,
    associated_data,
    envelope_from_settings,
    main,
    new_key_entry,
    parse_keys,
)

SECRET = b"sk-partner-0123456789"
AAD = associated_data("endpoint-api-key", "tenant-a", "sub_1")


def keys(*ids: str, current: str = "") -> LocalKeys:
    return LocalKeys({i: os.urandom(KEY_BYTES) for i in ids}, current)


async def test_a_sealed_secret_opens_and_its_stored_form_never_holds_the_secret() -> None:
    envelope = Envelope(keys("k1"))
    sealed = await envelope.seal(SECRET, AAD)
    assert await envelope.open(sealed, AAD) == SECRET
    assert sealed.key_id == "k1"
    for stored in (sealed.ciphertext, sealed.wrapped_key):
        assert SECRET not in stored and base64.b64encode(SECRET) not in stored
    # A fresh data key and nonce per secret: the same secret never seals to the same bytes.
    again = await envelope.seal(SECRET, AAD)
    assert again.ciphertext != sealed.ciphertext and again.wrapped_key != sealed.wrapped_key


async def test_another_deployments_key_does_not_open_it() -> None:
    sealed = await Envelope(keys("k1")).seal(SECRET, AAD)
    with pytest.raises(CannotOpen):
        await Envelope(keys("k1")).open(sealed, AAD)  # same id, other key bytes
    with pytest.raises(CannotOpen, match="'k1' is not in MEDBENCH_SECRETS__KEYS"):
        await Envelope(keys("k2")).open(sealed, AAD)


@pytest.mark.parametrize(
    "other",
    [
        associated_data("endpoint-api-key", "tenant-a", "sub_2"),  # another submission
        associated_data("endpoint-api-key", "tenant-b", "sub_1"),  # another tenant
        associated_data("judge-api-key", "tenant-a", "sub_1"),  # another purpose
    ],
)
async def test_a_secret_copied_to_another_submission_or_tenant_does_not_open(
    other: bytes,
) -> None:
    envelope = Envelope(keys("k1"))
    sealed = await envelope.seal(SECRET, AAD)
    with pytest.raises(CannotOpen):
        await envelope.open(sealed, other)


def test_associated_data_is_unambiguous() -> None:
    # Joining with a separator would make ("a:b", "c") and ("a", "b:c") the same.
    assert associated_data("p", "a:b", "c") != associated_data("p", "a", "b:c")
    with pytest.raises(ValueError):
        associated_data("p", "tenant", "")


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
@pytest.mark.parametrize("where", [0, 12, -1])
async def test_a_flipped_bit_anywhere_is_refused(part: str, where: int) -> None:
    envelope = Envelope(keys("k1"))
    sealed = await envelope.seal(SECRET, AAD)
    blob = bytearray(getattr(sealed, part))
    blob[where] ^= 0x01
    with pytest.raises(CannotOpen):
        await envelope.open(replace(sealed, **{part: bytes(blob)}), AAD)
    with pytest.raises(CannotOpen):
        await envelope.open(replace(sealed, **{part: bytes(blob[:20])}), AAD)


async def test_a_swapped_data_key_does_not_open_the_other_secret() -> None:
    envelope = Envelope(keys("k1"))
    a = await envelope.seal(SECRET, AAD)
    b = await envelope.seal(b"other", AAD)
    with pytest.raises(CannotOpen):
        await envelope.open(replace(a, wrapped_key=b.wrapped_key), AAD)


async def test_rotation_new_secrets_use_the_current_key_old_ones_open_and_rewrap() -> None:
    k1, k2 = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
    before = Envelope(LocalKeys({"k1": k1}))
    old = await before.seal(SECRET, AAD)

    after = Envelope(LocalKeys({"k1": k1, "k2": k2}, current="k2"))
    assert (await after.seal(b"new", AAD)).key_id == "k2"
    assert await after.open(old, AAD) == SECRET

    moved = await after.rewrap(old, AAD)
    assert moved is not None and moved.key_id == "k2"
    assert moved.ciphertext == old.ciphertext  # only the data key's wrap changes
    assert await after.rewrap(moved, AAD) is None  # already current
    # Once every secret is re-wrapped, the old key can go.
    assert await Envelope(LocalKeys({"k2": k2})).open(moved, AAD) == SECRET
    with pytest.raises(CannotOpen):
        await after.rewrap(old, associated_data("endpoint-api-key", "tenant-b", "sub_1"))


def test_settings_parse_named_keys_and_the_current_one() -> None:
    e1, e2 = new_key_entry("k-2026.1"), new_key_entry("k2")
    parsed = parse_keys(f" {e1},\n{e2}\n")
    assert list(parsed) == ["k-2026.1", "k2"]
    assert all(len(k) == KEY_BYTES for k in parsed.values())
    assert LocalKeys(parsed).current_id == "k-2026.1"  # the first listed, by default
    chosen = LocalKeys.from_settings(SecretsSettings(keys=f"{e1},{e2}", current="k2"))
    assert chosen.current_id == "k2" and chosen.knows("k-2026.1") and not chosen.knows("k3")


@pytest.mark.parametrize(
    ("keys_value", "current", "message"),
    [
        ("", "", "MEDBENCH_SECRETS__KEYS is not set"),
        ("k1", "", "MEDBENCH_SECRETS__KEYS: each entry must be <id>:<base64 key>"),
        ("k 1:" + base64.b64encode(b"x" * 32).decode(), "", "each entry must be"),
        ("k1:" + base64.b64encode(b"short").decode(), "", "'k1' must be 32 random bytes"),
        ("k1:not base64!", "", "'k1' must be 32 random bytes"),
        ("k1:{k},k1:{k}", "", "'k1' is listed twice"),
        ("k1:{k}", "k9", "MEDBENCH_SECRETS__CURRENT='k9' is not among the ids"),
    ],
)
def test_a_missing_or_bad_key_setting_is_refused_naming_the_setting(
    keys_value: str, current: str, message: str
) -> None:
    secret = base64.b64encode(os.urandom(KEY_BYTES)).decode()
    settings = SecretsSettings(keys=keys_value.replace("{k}", secret), current=current)
    with pytest.raises(SecretsNotConfigured, match=message) as caught:
        envelope_from_settings(settings)
    assert secret not in str(caught.value)  # key material never lands in an error or a log


def test_new_key_command_prints_a_usable_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-key", "k7"]) == 0
    entry = capsys.readouterr().out.strip()
    assert entry.startswith("k7:") and list(parse_keys(entry)) == ["k7"]
    with pytest.raises(ValueError):
        new_key_entry("bad id")
