"""The vault: encrypted, versioned secrets of many tenants, in Postgres.

Guarantees
    A value is stored only encrypted (AES-256-GCM under its tenant's data key, bound to its
    tenant, name and version); the data key is stored only wrapped by a master key. Every
    write runs in one transaction: a call that raises wrote nothing. Resolution is scoped to
    a tenant: a reference naming another tenant is refused before any lookup. Every value
    the vault hands out or stores is registered with its :class:`Redactor` first.

State model
    ``data_key`` (one row per tenant: master key id + wrapped key), ``secret`` (a version
    counter per tenant and name), ``secret_version`` (ciphertexts), ``master_key``
    (fingerprints of the master key ids in use). In memory: unwrapped data keys keyed by
    their wrapped bytes (so they can never be stale) and, for ``resolve``, decrypted values
    for ``cache_ttl`` seconds.

How it fails
    Typed errors (``patchbay.secrets.errors``), never holding a value: NoMasterKey when no
    key is configured, UnknownMasterKey / WrongMasterKey when the configured keys cannot
    unwrap a data key, DecryptionFailed when ciphertext does not authenticate,
    SecretNotFound, CrossTenantReference, SchemaNotMigrated, DatabaseUnavailable. Master-key
    rotation commits per batch, so an interrupted rotation keeps its progress and the next
    run continues from the database's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from ._sql import statements_for, validate_schema_name
from .cache import CacheKey, ResolutionCache
from .crypto import data_key_context, decrypt_value, encrypt_value, new_data_key
from .errors import (
    CrossTenantReference,
    DatabaseUnavailable,
    DecryptionFailed,
    InvalidOption,
    InvalidValue,
    NoMasterKey,
    SchemaNotMigrated,
    SecretNotFound,
    SecretsError,
    UnknownMasterKey,
    WrongMasterKey,
)
from .keys import KeyUnwrapFailed, MasterKeyProvider
from .models import (
    RotationProgress,
    RotationReport,
    Secret,
    SecretInfo,
    ShredReport,
    StoredVersion,
)
from .redact import Redactor
from .refs import SecretRef, format_ref, is_ref, parse_ref, validate_secret_name, validate_tenant

__all__ = ["MAX_VALUE_BYTES", "TenantSecrets", "Vault"]

log = logging.getLogger("patchbay.secrets")

MAX_VALUE_BYTES = 64 * 1024
_DATA_KEY_CACHE_SIZE = 4096

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]


def _number(option: str, value: object, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"{option} must be a number, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidOption(f"{option} must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def _integer(option: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"{option} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidOption(f"{option} must be between {minimum} and {maximum}, got {value}")
    return value


def _encode_value(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidValue(f"a secret value must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidValue("a secret value must not be empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValue("a secret value must be valid text (it has a lone surrogate)") from exc
    if len(encoded) > MAX_VALUE_BYTES:
        raise InvalidValue(
            f"a secret value may be at most {MAX_VALUE_BYTES} bytes, this one is {len(encoded)}"
        )
    return encoded


class Vault:
    """Async client of the secret vault in one schema.

    Use as ``async with Vault(url, keys=load_key_provider()) as vault:``, or pass ``pool=``
    to share an open pool (of autocommit connections) with a QueueClient.

    Settings (validated here):

    - ``keys``: the master key provider; None means storing and reading values raise
      NoMasterKey (listing, deleting and shredding still work).
    - ``redactor``: where resolved values are registered (default: a new one, at
      ``vault.redactor``; pass it on as ``QueueClient(redact=vault.redactor)``).
    - ``cache_ttl``: seconds a resolved value is reused, in memory only (default 30; 0
      disables; at most 3600). Longer saves round trips, shorter sees rotated credentials
      sooner.
    - ``cache_max_entries``: values kept at most (default 10,000).
    - ``max_versions``: versions kept per secret, oldest pruned on put (default 10).
    - ``pool_min`` / ``pool_max``: connections of the vault's own pool (defaults 0 and 4).
    - ``clock``: monotonic seconds for the cache's TTL (tests pass a fake).
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: AsyncConnectionPool | None = None,
        schema: str = "patchbay",
        keys: MasterKeyProvider | None = None,
        redactor: Redactor | None = None,
        cache_ttl: float = 30.0,
        cache_max_entries: int = 10_000,
        max_versions: int = 10,
        pool_min: int = 0,
        pool_max: int = 4,
        clock: Callable[[], float] = time.monotonic,
        application_name: str = "patchbay-secrets",
    ) -> None:
        if (conninfo is None) == (pool is None):
            raise InvalidOption("give exactly one of conninfo and pool")
        self.schema = validate_schema_name(schema)
        self.keys = keys
        self.redactor = redactor if redactor is not None else Redactor()
        self.max_versions = _integer("max_versions", max_versions, 1, 10_000)
        self._cache = ResolutionCache(
            _number("cache_ttl", cache_ttl, 0, 3600),
            _integer("cache_max_entries", cache_max_entries, 0, 10_000_000),
            clock,
        )
        self._sql = statements_for(self.schema)
        self._own_pool = pool is None
        if pool is None:
            assert conninfo is not None
            pool = AsyncConnectionPool(
                conninfo,
                min_size=_integer("pool_min", pool_min, 0, 1000),
                max_size=_integer("pool_max", pool_max, 1, 1000),
                kwargs={"autocommit": True, "application_name": application_name},
                open=False,
                name=f"patchbay-secrets-{self.schema}",
            )
        self._pool = pool
        self._opened = not self._own_pool
        self._data_keys: OrderedDict[tuple[str, str, bytes], AESGCM] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[Secret]] = {}
        self._generation = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the vault's own pool (a shared pool is the caller's to open)."""
        if not self._opened:
            try:
                await self._pool.open(wait=True, timeout=30)
            except Exception as exc:
                raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
            self._opened = True
        return self

    async def close(self) -> None:
        """Close the vault's own pool and forget cached values and data keys."""
        self._cache.clear()
        self._data_keys.clear()
        if self._own_pool and self._opened:
            await self._pool.close()
            self._opened = False

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def cache(self) -> ResolutionCache:
        """The resolution cache (for stats and tests)."""
        return self._cache

    def for_tenant(self, tenant: str) -> TenantSecrets:
        """The view of one tenant's secrets that a job or API call of that tenant gets."""
        return TenantSecrets(self, validate_tenant(tenant))

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self, conn: Conn | None = None) -> AsyncIterator[Conn]:
        """A connection (the caller's, or one from the pool), with database errors turned
        into the room's types."""
        try:
            if conn is not None:
                yield conn
            else:
                if not self._opened:
                    raise SecretsError("the vault is not open: use 'async with Vault(...)'")
                async with self._pool.connection() as own:
                    yield own
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaNotMigrated(
                f"the vault's tables are missing from schema {self.schema!r}; run "
                "'patchbay migrate' first"
            ) from exc
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database error: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: Conn | None = None) -> AsyncIterator[Conn]:
        """A transaction of our own, or a savepoint in the caller's: a caller's
        non-autocommit connection keeps the decision to commit, and a failure inside rolls
        back to the savepoint, so the caller never commits half a put."""
        async with self._connection(conn) as c:
            if (
                conn is not None
                and not c.autocommit
                and c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            ):
                # psycopg would commit a transaction() block begun on an idle connection;
                # opening the caller's transaction first makes the block a savepoint in it.
                await c.execute(b"select 1")
            async with c.transaction():
                yield c

    def _require_keys(self) -> MasterKeyProvider:
        if self.keys is None or not self.keys.key_ids:
            raise NoMasterKey(
                "no master key is configured, so secrets cannot be encrypted or decrypted: set "
                "PATCHBAY_MASTER_KEYS to '<id>:<base64 of 32 random bytes>' (make one with "
                "'patchbay secrets new-master-key') or PATCHBAY_MASTER_KEY_FILE"
            )
        return self.keys

    async def _check_primary(self, conn: Conn, keys: MasterKeyProvider) -> str:
        """Record the newest key's fingerprint on first use; refuse an id whose recorded
        fingerprint differs (the id was reused for other key material)."""
        key_id = keys.key_ids[0]
        fingerprint = keys.fingerprint(key_id)
        if fingerprint is None:
            return key_id
        await conn.execute(
            self._sql["master_key_register"], {"id": key_id, "fingerprint": fingerprint}
        )
        cur = await conn.execute(self._sql["master_key_fingerprint"], {"id": key_id})
        row = await cur.fetchone()
        if row is not None and bytes(row[0]) != fingerprint:
            raise WrongMasterKey(
                f"master key id {key_id!r} is configured with key material other than the one "
                f"first used under that id; restore the original material for {key_id!r}, or "
                "give the new key a new id"
            )
        return key_id

    async def _unwrap_raw(self, conn: Conn, tenant: str, key_id: str, wrapped: bytes) -> bytes:
        keys = self._require_keys()
        try:
            return await keys.unwrap(key_id, wrapped, data_key_context(tenant))
        except UnknownMasterKey as exc:
            raise UnknownMasterKey(f"tenant {tenant!r}: {exc}") from None
        except KeyUnwrapFailed:
            pass
        configured = keys.fingerprint(key_id)
        cur = await conn.execute(self._sql["master_key_fingerprint"], {"id": key_id})
        row = await cur.fetchone()
        recorded = None if row is None else bytes(row[0])
        if configured is not None and recorded is not None and configured == recorded:
            raise DecryptionFailed(
                f"tenant {tenant!r}'s wrapped data key failed authentication under master key "
                f"{key_id!r}, which is the right key: the stored data key was altered. Its "
                "secrets cannot be decrypted; restore the data_key row from a backup or put "
                "them again"
            )
        raise WrongMasterKey(
            f"the master key configured as {key_id!r} cannot unwrap tenant {tenant!r}'s data "
            f"key: it is not the key material {key_id!r} had when the data key was wrapped"
            + ("" if recorded is not None else " (or the wrapped key was altered)")
            + f"; restore the original material for {key_id!r}"
        )

    async def _unwrap(self, conn: Conn, tenant: str, key_id: str, wrapped: bytes) -> AESGCM:
        # Keyed by the wrapped bytes themselves: a re-wrapped or re-created data key is a
        # different entry, so this cache can never serve a stale key.
        slot = (tenant, key_id, wrapped)
        aead = self._data_keys.get(slot)
        if aead is not None:
            self._data_keys.move_to_end(slot)
            return aead
        aead = AESGCM(await self._unwrap_raw(conn, tenant, key_id, wrapped))
        self._data_keys[slot] = aead
        while len(self._data_keys) > _DATA_KEY_CACHE_SIZE:
            self._data_keys.popitem(last=False)
        return aead

    async def _tenant_key(self, conn: Conn, tenant: str, keys: MasterKeyProvider) -> AESGCM:
        """The tenant's data key, created on first use; locked against shredding until the
        transaction ends."""
        for _ in range(3):
            cur = await conn.execute(self._sql["data_key_get_for_share"], {"tenant": tenant})
            row = await cur.fetchone()
            if row is not None:
                return await self._unwrap(conn, tenant, row[0], bytes(row[1]))
            await self._check_primary(conn, keys)
            raw = new_data_key()
            wrapped = await keys.wrap(raw, data_key_context(tenant))
            cur = await conn.execute(
                self._sql["data_key_insert"],
                {"tenant": tenant, "master_key_id": wrapped.key_id, "wrapped_key": wrapped.blob},
            )
            if await cur.fetchone() is not None:
                log.debug("created the data key of tenant %s", tenant)
                return AESGCM(raw)
            # Another transaction created it meanwhile: use theirs (read again).
        raise SecretsError(f"could not create or read the data key of tenant {tenant!r}")

    def _invalidate(self, tenant: str, name: str | None = None) -> None:
        self._generation += 1
        self._cache.invalidate(tenant, name)

    # -- values ----------------------------------------------------------------------------

    async def put(
        self, tenant: str, name: str, value: str, *, conn: Conn | None = None
    ) -> StoredVersion:
        """Store ``value`` as the next version of ``tenant``'s secret ``name``, pruning
        versions beyond ``max_versions``; returns the new version's metadata.

        With ``conn=``, it runs inside that connection's transaction (as a savepoint) and
        the caller commits or rolls back, so a secret can be stored atomically with the
        write that needs it; on an autocommit connection it commits at once."""
        validate_tenant(tenant)
        validate_secret_name(name)
        plaintext = _encode_value(value)
        keys = self._require_keys()
        self.redactor.register(value)
        async with self._transaction(conn) as c:
            aead = await self._tenant_key(c, tenant, keys)
            cur = await c.execute(
                self._sql["secret_next_version"], {"tenant": tenant, "name": name}
            )
            version = int((await _one(cur))[0])
            ciphertext = encrypt_value(aead, tenant, name, version, plaintext)
            cur = await c.execute(
                self._sql["secret_version_insert"],
                {"tenant": tenant, "name": name, "version": version, "ciphertext": ciphertext},
            )
            created_at = (await _one(cur))[0]
            cur = await c.execute(
                self._sql["secret_version_prune"],
                {"tenant": tenant, "name": name, "keep": self.max_versions},
            )
            pruned = max(cur.rowcount, 0)
        self._invalidate(tenant, name)
        return StoredVersion(tenant, name, version, created_at, pruned)

    async def get(self, tenant: str, name: str, version: int | None = None) -> Secret:
        """Decrypt one version (default: the latest) straight from the database, bypassing
        the cache. Raises SecretNotFound, DecryptionFailed or a MasterKeyError."""
        ref = SecretRef(validate_tenant(tenant), validate_secret_name(name), version)
        self._require_keys()
        params = {"tenant": tenant, "name": name, "version": version}
        statement = "secret_get_latest" if version is None else "secret_get_version"
        async with self._connection() as conn:
            cur = await conn.execute(self._sql[statement], params)
            row = await cur.fetchone()
            if row is None:
                which = "" if version is None else f" version {version}"
                raise SecretNotFound(
                    f"no secret {ref}: tenant {tenant!r} has no secret {name!r}{which}; store "
                    f"it with 'patchbay secrets put {tenant} {name}'"
                )
            found_version, ciphertext, created_at, key_id, wrapped = row
            aead = await self._unwrap(conn, tenant, key_id, bytes(wrapped))
        plaintext = decrypt_value(aead, tenant, name, found_version, bytes(ciphertext))
        value = plaintext.decode("utf-8")
        self.redactor.register(value)
        return Secret(tenant, name, found_version, created_at, value)

    async def resolve_secret(self, ref: str | SecretRef, *, tenant: str) -> Secret:
        """Resolve a reference for a caller acting for ``tenant``: refused with
        CrossTenantReference when it names another tenant; served from the cache when
        fresh; concurrent resolutions of one reference share one database read."""
        parsed = parse_ref(ref)
        if parsed.tenant != tenant:  # (equal means valid: the parsed tenant was validated)
            validate_tenant(tenant)
            raise CrossTenantReference(
                f"reference {parsed} names tenant {parsed.tenant!r}, but the caller acts for "
                f"tenant {tenant!r}; a tenant can only resolve its own secrets"
            )
        if not self._cache.enabled:
            return await self.get(tenant, parsed.name, parsed.version)
        key: CacheKey = (tenant, parsed.name, parsed.version)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.get(tenant, parsed.name, parsed.version))
            self._inflight[key] = pending
            generation = self._generation

            def finished(done: asyncio.Future[Secret]) -> None:
                self._inflight.pop(key, None)
                if done.cancelled() or done.exception() is not None:
                    return
                # A put or delete in this process since the read began makes it stale.
                if generation == self._generation:
                    self._cache.put(key, done.result())

            pending.add_done_callback(finished)
        # Shielded: one waiter giving up does not cancel the read the others wait for.
        return await asyncio.shield(pending)

    async def resolve(self, ref: str | SecretRef, *, tenant: str) -> str:
        """The value a reference points to, for a caller acting for ``tenant``."""
        return (await self.resolve_secret(ref, tenant=tenant)).value

    async def resolve_refs(self, data: T, *, tenant: str) -> T:
        """A copy of a JSON-like structure with every ``secret://`` string replaced by its
        value (for ``tenant``; any reference to another tenant fails the whole call)."""
        found: dict[str, str] = {}
        _collect_refs(data, found)
        values = await asyncio.gather(*(self.resolve(r, tenant=tenant) for r in found))
        resolved = dict(zip(found, values, strict=True))
        return _substitute(data, resolved)  # type: ignore[no-any-return]

    # -- metadata --------------------------------------------------------------------------

    async def list_secrets(
        self, tenant: str | None = None, *, prefix: str | None = None
    ) -> list[SecretInfo]:
        """Metadata of the secrets (of one tenant, or all; names starting with ``prefix``),
        ordered by tenant and name. Never values."""
        if tenant is not None:
            validate_tenant(tenant)
        if prefix is not None and (not isinstance(prefix, str) or len(prefix) > 200):
            raise InvalidOption("prefix must be a string of at most 200 characters")
        async with self._connection() as conn:
            cur = await conn.execute(self._sql["secret_list"], {"tenant": tenant, "prefix": prefix})
            rows = await cur.fetchall()
        return [SecretInfo(t, n, tuple(v), c, u) for t, n, v, c, u in rows]

    async def delete(
        self, tenant: str, name: str, version: int | None = None, *, conn: Conn | None = None
    ) -> None:
        """Delete one version, or (``version`` None) the secret with all its versions.
        Removing the last version removes the secret. Raises SecretNotFound."""
        ref = SecretRef(validate_tenant(tenant), validate_secret_name(name), version)
        params = {"tenant": tenant, "name": name, "version": version}
        async with self._transaction(conn) as c:
            if version is None:
                cur = await c.execute(self._sql["secret_delete"], params)
            else:
                cur = await c.execute(self._sql["secret_version_delete"], params)
            if await cur.fetchone() is None:
                raise SecretNotFound(f"no secret {ref} to delete")
            if version is not None:
                await c.execute(self._sql["secret_delete_if_empty"], params)
        self._invalidate(tenant, name)

    # -- keys ------------------------------------------------------------------------------

    async def key_usage(self) -> dict[str, int]:
        """How many data keys each master key id wraps."""
        async with self._connection() as conn:
            cur = await conn.execute(self._sql["data_key_count_by_master_key"])
            return {str(k): int(n) for k, n in await cur.fetchall()}

    async def check_master_keys(self) -> dict[str, int]:
        """For a daemon's start: raise NoMasterKey when none is configured and
        WrongMasterKey when a configured id's material differs from the one recorded for
        it; return :meth:`key_usage` (ids in it that are not configured cannot be
        unwrapped until they are)."""
        keys = self._require_keys()
        async with self._connection() as conn:
            cur = await conn.execute(self._sql["master_key_list"])
            recorded = {str(i): bytes(f) for i, f, _ in await cur.fetchall()}
        for key_id in keys.key_ids:
            mine = keys.fingerprint(key_id)
            if mine is not None and key_id in recorded and recorded[key_id] != mine:
                raise WrongMasterKey(
                    f"master key id {key_id!r} is configured with other key material than the "
                    f"one recorded for it; restore the original material for {key_id!r}"
                )
        return await self.key_usage()

    async def rotate_master_key(
        self,
        *,
        batch_size: int = 100,
        progress: Callable[[RotationProgress], None] | None = None,
    ) -> RotationReport:
        """Re-wrap every data key not wrapped by the newest master key with it. Values are
        not touched: their ciphertext stays byte for byte the same.

        Resumable: each batch commits on its own, and which keys remain is read from the
        database, so after a crash or Ctrl-C the next call continues. Several rotations may
        run at once (each skips the rows another holds). ``progress`` is called after each
        committed batch. A data key that cannot be unwrapped (its master key is not
        configured, or wrong) is left as it is and listed in ``failed``."""
        size = _integer("batch_size", batch_size, 1, 10_000)
        keys = self._require_keys()
        target = keys.key_ids[0]
        async with self._connection() as conn:
            cur = await conn.execute(self._sql["data_key_count_not_wrapped_by"], {"target": target})
            total = int((await _one(cur))[0])
        done = 0
        failed: list[tuple[str, str]] = []
        after = ""
        while True:
            async with self._transaction() as conn:
                await self._check_primary(conn, keys)
                cur = await conn.execute(
                    self._sql["data_key_claim_for_rewrap"],
                    {"target": target, "after": after, "limit": size},
                )
                rows = await cur.fetchall()
                for tenant, old_key_id, wrapped in rows:
                    after = tenant
                    try:
                        raw = await self._unwrap_raw(conn, tenant, old_key_id, bytes(wrapped))
                    except (UnknownMasterKey, WrongMasterKey, DecryptionFailed) as exc:
                        failed.append((tenant, str(exc)))
                        continue
                    rewrapped = await keys.wrap(raw, data_key_context(tenant))
                    cur = await conn.execute(
                        self._sql["data_key_rewrap"],
                        {
                            "tenant": tenant,
                            "target": rewrapped.key_id,
                            "wrapped_key": rewrapped.blob,
                            "old_key_id": old_key_id,
                        },
                    )
                    done += cur.rowcount
            if not rows:
                break
            if progress is not None:
                progress(RotationProgress(target, done, total, len(failed)))
        usage = await self.key_usage()
        remaining = sum(n for key_id, n in usage.items() if key_id != target)
        if failed:
            log.warning(
                "master key rotation to %s left %d data key(s) as they were", target, len(failed)
            )
        return RotationReport(target, done, remaining, tuple(failed), usage)

    async def shred_tenant(self, tenant: str, *, conn: Conn | None = None) -> ShredReport:
        """Crypto-shred a tenant: delete its data key, and with it (cascade) its secrets.
        Any copy of its ciphertexts (backups, dumps, replicas' old pages) can no longer be
        decrypted. Idempotent: shredding an unknown tenant reports zeros."""
        validate_tenant(tenant)
        async with self._transaction(conn) as c:
            await c.execute(self._sql["data_key_lock_for_shred"], {"tenant": tenant})
            cur = await c.execute(self._sql["data_key_shred"], {"tenant": tenant})
            keys_gone, secrets, versions = await _one(cur)
        self._invalidate(tenant)
        for slot in [s for s in self._data_keys if s[0] == tenant]:
            del self._data_keys[slot]
        if keys_gone:
            log.info("shredded tenant %s: %d secret(s) made unrecoverable", tenant, secrets)
        return ShredReport(tenant, int(keys_gone), int(secrets or 0), int(versions or 0))


class TenantSecrets:
    """One tenant's secrets: the only view of the vault a job or API call of that tenant
    gets. Every reference it resolves must name its tenant (CrossTenantReference
    otherwise)."""

    def __init__(self, vault: Vault, tenant: str) -> None:
        self._vault = vault
        self._tenant = tenant

    def __repr__(self) -> str:
        return f"TenantSecrets(tenant={self._tenant!r})"

    @property
    def tenant(self) -> str:
        """The tenant this view is scoped to."""
        return self._tenant

    def ref(self, name: str, version: int | None = None) -> str:
        """The reference of this tenant's secret ``name``."""
        return format_ref(self._tenant, name, version)

    async def resolve(self, ref: str | SecretRef) -> str:
        """The value a reference points to (cached for the vault's ``cache_ttl``)."""
        return await self._vault.resolve(ref, tenant=self._tenant)

    async def resolve_secret(self, ref: str | SecretRef) -> Secret:
        """Like :meth:`resolve`, with the version and date."""
        return await self._vault.resolve_secret(ref, tenant=self._tenant)

    async def resolve_refs(self, data: T) -> T:
        """A copy of ``data`` with every reference replaced by its value."""
        return await self._vault.resolve_refs(data, tenant=self._tenant)

    async def get(self, name: str, version: int | None = None) -> Secret:
        """One version (default latest) of this tenant's secret ``name``, cached."""
        return await self.resolve_secret(SecretRef(self._tenant, name, version))


async def _one(cur: psycopg.AsyncCursor[Any]) -> Any:
    row = await cur.fetchone()
    if row is None:  # statements given to _one always return a row
        raise SecretsError("the database returned no row where one was expected")
    return row


def _collect_refs(data: Any, found: dict[str, str]) -> None:
    if is_ref(data):
        found[data] = data
    elif isinstance(data, dict):
        for value in data.values():
            _collect_refs(value, found)
    elif isinstance(data, list | tuple):
        for value in data:
            _collect_refs(value, found)


def _substitute(data: Any, resolved: dict[str, str]) -> Any:
    if isinstance(data, str):
        return resolved.get(data, data)
    if isinstance(data, dict):
        return {k: _substitute(v, resolved) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, resolved) for v in data]
    if isinstance(data, tuple):
        return tuple(_substitute(v, resolved) for v in data)
    return data
