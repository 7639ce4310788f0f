"""Envelope encryption of secret values: AES-256-GCM under a per-tenant data key.

A value's ciphertext is ``format byte || 96-bit random nonce || ciphertext || 128-bit
tag``. Its associated data is the tenant, name and version, so the ciphertext only
decrypts in the row it was written for: copied to another name, version or tenant, it fails
authentication (:class:`~patchbay.secrets.errors.DecryptionFailed`), and so does any
altered byte. A data key's wrapping context is its tenant, so a wrapped data key moved to
another tenant does not unwrap either.

Random nonces are safe up to about 2^32 encryptions per key (NIST SP 800-38D); a data key
encrypts one value per ``put`` of its tenant, far below that.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptionFailed

__all__ = [
    "DATA_KEY_BYTES",
    "data_key_context",
    "decrypt_value",
    "encrypt_value",
    "new_data_key",
    "value_aad",
]

DATA_KEY_BYTES = 32
_FORMAT = b"\x01"
_NONCE_BYTES = 12
_TAG_BYTES = 16


def new_data_key() -> bytes:
    """32 random bytes from the operating system's CSPRNG."""
    return os.urandom(DATA_KEY_BYTES)


def _aead(key: bytes | AESGCM) -> AESGCM:
    return key if isinstance(key, AESGCM) else AESGCM(key)


def value_aad(tenant: str, name: str, version: int) -> bytes:
    """The associated data binding a value's ciphertext to its row. Tenant and name cannot
    hold NUL (their grammar forbids it), so the encoding is unambiguous."""
    return f"patchbay:secret:v1\x00{tenant}\x00{name}\x00{version}".encode()


def data_key_context(tenant: str) -> bytes:
    """The wrapping context of a tenant's data key."""
    return f"patchbay:data_key:v1\x00{tenant}".encode()


def encrypt_value(
    data_key: bytes | AESGCM, tenant: str, name: str, version: int, value: bytes
) -> bytes:
    """Encrypt ``value`` for row (tenant, name, version). ``data_key`` is the raw key or an
    ``AESGCM`` made from it (the vault keeps those, saving the key schedule per call)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _aead(data_key).encrypt(nonce, value, value_aad(tenant, name, version))
    return _FORMAT + nonce + sealed


def decrypt_value(
    data_key: bytes | AESGCM, tenant: str, name: str, version: int, ciphertext: bytes
) -> bytes:
    """Decrypt the ciphertext of row (tenant, name, version); raises DecryptionFailed."""
    where = f"secret {tenant}/{name} version {version}"
    if len(ciphertext) < 1 + _NONCE_BYTES + _TAG_BYTES or ciphertext[:1] != _FORMAT:
        raise DecryptionFailed(f"{where}: stored ciphertext has an unknown format or length")
    nonce, sealed = ciphertext[1 : 1 + _NONCE_BYTES], ciphertext[1 + _NONCE_BYTES :]
    try:
        return _aead(data_key).decrypt(nonce, sealed, value_aad(tenant, name, version))
    except InvalidTag as exc:
        raise DecryptionFailed(
            f"{where}: ciphertext failed authentication (altered, or copied from another "
            "row, version or tenant); the value cannot be recovered from it, put it again"
        ) from exc
