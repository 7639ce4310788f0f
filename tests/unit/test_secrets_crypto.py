from __future__ import annotations

import asyncio

import pytest

from patchbay.secrets import (
    DecryptionFailed,
    KeyUnwrapFailed,
    LocalKeyProvider,
    UnknownMasterKey,
    generate_master_key,
)
from patchbay.secrets.crypto import data_key_context, decrypt_value, encrypt_value, new_data_key


def test_value_round_trip_and_fresh_nonces() -> None:
    key = new_data_key()
    one = encrypt_value(key, "acme", "token", 1, b"s3cret")
    two = encrypt_value(key, "acme", "token", 1, b"s3cret")
    assert one != two  # random nonce each time
    assert b"s3cret" not in one
    assert decrypt_value(key, "acme", "token", 1, one) == b"s3cret"


@pytest.mark.parametrize(
    ("tenant", "name", "version"),
    [("other", "token", 1), ("acme", "token2", 1), ("acme", "token", 2), ("acm", "etoken", 1)],
)
def test_ciphertext_is_bound_to_its_row(tenant: str, name: str, version: int) -> None:
    key = new_data_key()
    sealed = encrypt_value(key, "acme", "token", 1, b"value")
    with pytest.raises(DecryptionFailed):
        decrypt_value(key, tenant, name, version, sealed)


def test_every_altered_byte_fails_authentication() -> None:
    key = new_data_key()
    sealed = encrypt_value(key, "acme", "token", 1, b"value")
    for index in range(len(sealed)):
        altered = bytearray(sealed)
        altered[index] ^= 0x01
        with pytest.raises(DecryptionFailed):
            decrypt_value(key, "acme", "token", 1, bytes(altered))
    for short in (b"", sealed[:10], sealed[:-1]):
        with pytest.raises(DecryptionFailed):
            decrypt_value(key, "acme", "token", 1, short)


def test_wrong_data_key_fails() -> None:
    sealed = encrypt_value(new_data_key(), "acme", "token", 1, b"value")
    with pytest.raises(DecryptionFailed):
        decrypt_value(new_data_key(), "acme", "token", 1, sealed)


def test_provider_newest_wraps_all_unwrap() -> None:
    old, new = generate_master_key("old"), generate_master_key("new")
    before = LocalKeyProvider([old])
    after = LocalKeyProvider([new, old])
    data_key = new_data_key()
    context = data_key_context("acme")

    async def go() -> None:
        wrapped_old = await before.wrap(data_key, context)
        assert wrapped_old.key_id == "old"
        assert data_key not in wrapped_old.blob
        assert await after.unwrap("old", wrapped_old.blob, context) == data_key
        wrapped_new = await after.wrap(data_key, context)
        assert wrapped_new.key_id == "new"
        with pytest.raises(UnknownMasterKey):
            await before.unwrap("new", wrapped_new.blob, context)
        with pytest.raises(KeyUnwrapFailed):  # moved to another tenant
            await after.unwrap("new", wrapped_new.blob, data_key_context("other"))
        with pytest.raises(KeyUnwrapFailed):  # same id, other material
            await LocalKeyProvider([generate_master_key("new")]).unwrap(
                "new", wrapped_new.blob, context
            )
        with pytest.raises(KeyUnwrapFailed):
            await after.unwrap("new", wrapped_new.blob[:-1] + b"\0", context)

    asyncio.run(go())
