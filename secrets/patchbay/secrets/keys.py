"""Master keys: where they come from, and the interface that wraps data keys with them.

A master key never encrypts a secret value: it wraps (encrypts) the per-tenant data keys,
so rotating it re-wraps a few hundred bytes per tenant and re-encrypts no value.

Several master keys can be configured, **newest first**: the first wraps new data keys
(and re-wraps old ones on ``rotate-master-key``), every listed key can unwrap. Each key has
an id, stored beside every data key it wraps, so the right key is used without trial and
error; an id must never be reused for different key material (the vault records a
fingerprint of each id's key and refuses a mismatch, :class:`WrongMasterKey`).

Sources, in order (see :func:`load_key_provider`):

- ``PATCHBAY_MASTER_KEYS``: ``id:base64key[,id:base64key...]``, newest first;
- ``PATCHBAY_MASTER_KEY_FILE``: a file of ``id:base64key`` lines, newest first, ``#``
  comments allowed; it should be readable by its owner only (a warning says otherwise);
- local development mode only (the caller passes the folder of the embedded database):
  ``<folder>/master.keys``, created on first use with one new key, and announced.

:class:`MasterKeyProvider` is the interface a cloud KMS or Vault transit provider
implements: it wraps and unwraps bytes under a key id with an authenticated context, and
never has to hand out key material.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import InvalidMasterKey, KeyUnwrapFailed, NoMasterKey, UnknownMasterKey

__all__ = [
    "DEV_KEY_FILE_NAME",
    "KEYS_ENV",
    "KEY_FILE_ENV",
    "KeyUnwrapFailed",
    "LocalKeyProvider",
    "MasterKey",
    "MasterKeyProvider",
    "WrappedKey",
    "development_key_provider",
    "format_master_key",
    "generate_master_key",
    "load_key_provider",
    "parse_master_keys",
]

log = logging.getLogger("patchbay.secrets.keys")

KEYS_ENV = "PATCHBAY_MASTER_KEYS"
KEY_FILE_ENV = "PATCHBAY_MASTER_KEY_FILE"
DEV_KEY_FILE_NAME = "master.keys"

KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_WRAP_FORMAT = b"\x01"
_NONCE_BYTES = 12
_FINGERPRINT_LABEL = b"patchbay master key fingerprint v1"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by master key ``key_id``."""

    key_id: str
    blob: bytes = field(repr=False)


@runtime_checkable
class MasterKeyProvider(Protocol):
    """Wraps and unwraps data keys under named master keys.

    ``context`` is authenticated, not secret: the vault passes the tenant, so a wrapped key
    moved to another tenant's row does not unwrap. Implementations for a KMS map it to the
    service's encryption context (AWS KMS) or associated data (Vault transit).
    """

    @property
    def key_ids(self) -> Sequence[str]:
        """The configured key ids, newest first; the first one wraps."""
        ...

    def fingerprint(self, key_id: str) -> bytes | None:
        """A short, non-secret digest identifying the key material of ``key_id`` (None if
        the provider cannot tell, e.g. a KMS key it never sees)."""
        ...

    async def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        """Wrap ``data_key`` under the newest key."""
        ...

    async def unwrap(self, key_id: str, blob: bytes, context: bytes) -> bytes:
        """Unwrap; raises UnknownMasterKey if ``key_id`` is not configured and
        KeyUnwrapFailed if the blob does not authenticate under it."""
        ...


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A master key: its id and 32 bytes of key material (never shown in ``repr``)."""

    id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _KEY_ID.fullmatch(self.id):
            raise InvalidMasterKey(
                f"invalid master key id {self.id!r}: use 1-64 characters of letters, digits "
                "and '_ . -'"
            )
        if not isinstance(self.material, bytes) or len(self.material) != KEY_BYTES:
            raise InvalidMasterKey(
                f"master key {self.id!r} must be {KEY_BYTES} bytes (base64 of 32 random bytes)"
            )

    @property
    def fingerprint(self) -> bytes:
        """HMAC-SHA256 of a fixed label under the key, first 16 bytes: identifies the
        material without revealing it."""
        return hmac.digest(self.material, _FINGERPRINT_LABEL, "sha256")[:16]


def generate_master_key(key_id: str | None = None) -> MasterKey:
    """A new random master key; the default id is ``k<UTC date>-<random>``, so ids sort by
    age and never repeat."""
    if key_id is None:
        key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    return MasterKey(key_id, secrets.token_bytes(KEY_BYTES))


def format_master_key(key: MasterKey) -> str:
    """The ``id:base64`` text form used by the environment variable and key files."""
    return f"{key.id}:{base64.b64encode(key.material).decode('ascii')}"


def parse_master_keys(text: str, *, source: str) -> list[MasterKey]:
    """Parse ``id:base64`` entries separated by commas or newlines (``#`` starts a comment
    line), newest first. ``source`` names where they came from, for error messages (the
    key material itself is never echoed)."""
    keys: list[MasterKey] = []
    entries = [
        part.strip()
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for part in line.split(",")
    ]
    for position, entry in enumerate((e for e in entries if e), start=1):
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise InvalidMasterKey(
                f"{source}: entry {position} is not '<id>:<base64 key>' (no ':' found)"
            )
        try:
            material = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidMasterKey(f"{source}: key {key_id.strip()!r} is not valid base64") from exc
        try:
            keys.append(MasterKey(key_id.strip(), material))
        except InvalidMasterKey as exc:
            raise InvalidMasterKey(f"{source}: {exc}") from exc
    ids = [k.id for k in keys]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidMasterKey(f"{source}: key id(s) listed twice: {', '.join(duplicates)}")
    return keys


class LocalKeyProvider:
    """Master keys held in this process (from the environment or a key file).

    Wrapping is AES-256-GCM with a random 96-bit nonce; the associated data is the key id
    plus the caller's context, so a blob only unwraps under its own key id and context.
    """

    def __init__(self, keys: Iterable[MasterKey], *, source: str = "configured keys") -> None:
        self._keys = list(keys)
        if not self._keys:
            raise NoMasterKey(f"{source}: no master key listed")
        ids = [k.id for k in self._keys]
        if len(set(ids)) != len(ids):
            raise InvalidMasterKey(f"{source}: a master key id is listed twice")
        self.source = source
        self._by_id = {k.id: AESGCM(k.material) for k in self._keys}
        self._fingerprints = {k.id: k.fingerprint for k in self._keys}

    def __repr__(self) -> str:
        return f"LocalKeyProvider(key_ids={list(self.key_ids)!r}, source={self.source!r})"

    @classmethod
    def from_text(cls, text: str, *, source: str) -> LocalKeyProvider:
        """Keys from ``id:base64`` text (see :func:`parse_master_keys`)."""
        return cls(parse_master_keys(text, source=source), source=source)

    @classmethod
    def from_file(cls, path: Path | str) -> LocalKeyProvider:
        """Keys from a key file; warns when the file is readable by others."""
        path = Path(path)
        source = f"key file {path}"
        try:
            mode = path.stat().st_mode
            text = path.read_text("utf-8")
        except OSError as exc:
            raise NoMasterKey(f"cannot read master key file {path}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("master key file %s is accessible by group or others; chmod 600 it", path)
        return cls.from_text(text, source=source)

    @property
    def key_ids(self) -> Sequence[str]:
        """The configured key ids, newest first."""
        return tuple(k.id for k in self._keys)

    @property
    def primary_key_id(self) -> str:
        """The id of the key that wraps."""
        return self._keys[0].id

    def fingerprint(self, key_id: str) -> bytes | None:
        """See :attr:`MasterKey.fingerprint`; None for an unknown id."""
        return self._fingerprints.get(key_id)

    async def wrap(self, data_key: bytes, context: bytes) -> WrappedKey:
        """Wrap under the newest key."""
        key_id = self._keys[0].id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._by_id[key_id].encrypt(nonce, data_key, _aad(key_id, context))
        return WrappedKey(key_id, _WRAP_FORMAT + nonce + sealed)

    async def unwrap(self, key_id: str, blob: bytes, context: bytes) -> bytes:
        """Unwrap with key ``key_id``."""
        aead = self._by_id.get(key_id)
        if aead is None:
            raise UnknownMasterKey(
                f"data is wrapped by master key {key_id!r}, which is not configured "
                f"(configured: {', '.join(self.key_ids)}); add it back to {KEYS_ENV} or the "
                "key file until rotate-master-key has re-wrapped everything"
            )
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _WRAP_FORMAT:
            raise KeyUnwrapFailed("wrapped key has an unknown format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, sealed, _aad(key_id, context))
        except InvalidTag as exc:
            raise KeyUnwrapFailed(f"wrapped key does not authenticate under {key_id!r}") from exc


def _aad(key_id: str, context: bytes) -> bytes:
    return b"patchbay:wrap:v1\x00" + key_id.encode("ascii") + b"\x00" + context


def load_key_provider(
    environ: Mapping[str, str] | None = None,
    *,
    development_home: Path | None = None,
    announce: Callable[[str], None] | None = None,
) -> LocalKeyProvider | None:
    """The master keys configured for this process, or None when there are none.

    ``PATCHBAY_MASTER_KEYS`` or ``PATCHBAY_MASTER_KEY_FILE`` (setting both is an error, so
    which keys are in force is never ambiguous). With neither, and ``development_home``
    given (local development mode: the folder of the embedded database), the key file
    ``<development_home>/master.keys`` is used, created with one new key if missing, and
    ``announce`` (default: a warning log) is told. Production callers pass no
    ``development_home`` and treat None as "refuse to start".
    """
    env = os.environ if environ is None else environ
    inline = env.get(KEYS_ENV, "").strip()
    file_name = env.get(KEY_FILE_ENV, "").strip()
    if inline and file_name:
        raise InvalidMasterKey(
            f"both {KEYS_ENV} and {KEY_FILE_ENV} are set; set only one, so the keys in force "
            "are never ambiguous"
        )
    if inline:
        return LocalKeyProvider.from_text(inline, source=KEYS_ENV)
    if file_name:
        return LocalKeyProvider.from_file(Path(file_name).expanduser())
    if development_home is None:
        return None
    return development_key_provider(development_home, announce=announce)


def development_key_provider(
    folder: Path, *, announce: Callable[[str], None] | None = None
) -> LocalKeyProvider:
    """The local development key file in ``folder``, created (mode 600) on first use.

    Creation is atomic and exclusive: the key is written to a private temporary file and
    hard-linked into place, which fails if the file exists. When two processes start at
    once, one creates the key and the other reads that complete file: never a second key,
    never a half-written one."""
    say = announce or log.warning
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEV_KEY_FILE_NAME
    if path.exists():
        return LocalKeyProvider.from_file(path)
    key = generate_master_key(f"dev-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}")
    body = (
        "# patchbay local development master key: for this machine's demo data only.\n"
        f"# In production set {KEYS_ENV} or {KEY_FILE_ENV} instead.\n"
        f"{format_master_key(key)}\n"
    )
    temporary = folder / f".{DEV_KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, body.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return LocalKeyProvider.from_file(path)
    finally:
        temporary.unlink(missing_ok=True)
    say(
        f"development mode: created master key file {path} (no {KEYS_ENV} set). "
        "Fine for local use; never for production."
    )
    return LocalKeyProvider.from_file(path)
