"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A secret is ``whsec_`` + base64 of random bytes; the HMAC key is those bytes. A delivery
carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, space-separated when several
secrets sign (during a rotation's grace period).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from .errors import InvalidSigningSecret

__all__ = [
    "SECRET_PREFIX",
    "generate_secret",
    "secret_key",
    "sign",
    "signature_header",
    "validate_secret",
]

SECRET_PREFIX = "whsec_"
_MIN_KEY_BYTES = 24
_MAX_KEY_BYTES = 64


def generate_secret(size: int = 32) -> str:
    """A new signing secret: ``whsec_`` + base64 of ``size`` random bytes (default 32)."""
    if not _MIN_KEY_BYTES <= size <= _MAX_KEY_BYTES:
        raise InvalidSigningSecret(
            f"a signing secret holds {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes, not {size}"
        )
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; raises InvalidSigningSecret (never showing
    the secret) when it is malformed."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidSigningSecret("a signing secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSigningSecret("a signing secret must be 'whsec_' + base64") from exc
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise InvalidSigningSecret(
            f"a signing secret must hold {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes, "
            f"this one holds {len(key)}"
        )
    return key


def validate_secret(secret: str) -> str:
    """Return ``secret`` if it is a valid ``whsec_`` secret, else raise."""
    secret_key(secret)
    return secret


def sign(secret: str | bytes, message_id: str, timestamp: int, body: str | bytes) -> str:
    """One signature, ``v1,<base64>``, of ``message_id.timestamp.body``; ``secret`` is a
    ``whsec_`` secret or its key bytes."""
    key = secret if isinstance(secret, bytes) else secret_key(secret)
    payload = body if isinstance(body, bytes) else body.encode("utf-8")
    signed = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(
    keys: Iterable[str | bytes], message_id: str, timestamp: int, body: str | bytes
) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(key, message_id, timestamp, body) for key in keys)
