"""The registry: tenants and their integrations, and the audit stream of integrations.

Guarantees
    Every call validates its whole input (ids, limits, cron schedules, the config against
    the connector's model, secret fields as references to the integration's own tenant,
    and, when asked, the connector's ``check()``) before it writes, and writes in one
    transaction: a call that raises wrote nothing. Every lifecycle change of an
    integration appends its :class:`AuditEvent` in the same transaction as the change, so
    the audit stream never misses a change nor records one that did not happen.

State model
    ``tenant`` (status ``active | disabled``; limits; an optional sync cron) and
    ``integration`` (status ``active | paused | needs_attention | disabled``; failure
    counters written by the failure policy) rows; ``integration_event`` is append-only, in
    ``id`` order. Transitions made here::

        add ──► active ◄──── resume ──── paused | needs_attention | disabled
                  │  pause ──► paused          (needs_attention is set by the failure policy)
                  └─ disable ─► disabled        (from any status)

    Pausing a paused integration, resuming an active one or disabling a disabled one
    changes nothing and records nothing.

Event export
    ``event_sinks`` are called after commit with each new event, in order. Delivery is
    best effort and at least once from the stream's point of view: a sink that raises is
    logged and the others still run, and a process that dies between commit and the call
    never makes it. A sink that must see every event keeps the last ``id`` it handled and,
    on start, catches up with :meth:`Registry.stream` (so it may see an event twice).

How it fails
    Typed errors of :mod:`patchbay.runtime.errors` (the tree is drawn there): bad input is
    an :class:`InvalidRegistryInput` (a ``patchbay.queue.InvalidInput``), missing rows a
    ``LookupError``. Database errors pass through as SQLAlchemy's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from croniter import croniter
from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from patchbay.connectors import (
    CheckContext,
    Connector,
    ConnectorExecutor,
    HttpClient,
    InvalidConnector,
    discover,
    secret_fields,
)
from patchbay.queue import Clock
from patchbay.secrets import InvalidName, InvalidReference, Vault, parse_ref, validate_tenant

from .errors import (
    CheckFailed,
    IntegrationExists,
    IntegrationNotFound,
    InvalidConfig,
    InvalidCron,
    InvalidId,
    InvalidLimits,
    InvalidRegistryInput,
    InvalidTransition,
    SecretNotReference,
    TenantDisabled,
    TenantExists,
    TenantNotFound,
    UnknownConnector,
)
from .models import Integration, IntegrationEvent, Tenant, create_engine

__all__ = [
    "EVENT_KINDS",
    "AuditEvent",
    "EventSink",
    "IntegrationInfo",
    "Registry",
    "ResumeContext",
    "ResumeHook",
    "TenantInfo",
    "validate_cron",
]

log = logging.getLogger("patchbay.runtime.registry")

#: Event kinds the registry writes; other services of the runtime add their own
#: (``needs_attention``, ``resolved``, ``synced``, ...) with :meth:`Registry.record_event`.
EVENT_KINDS = (
    "created",
    "paused",
    "resumed",
    "disabled",
    "config_changed",
    "sync_requested",
    "backfill_started",
)

TENANT_STATUSES = ("active", "disabled")
INTEGRATION_STATUSES = ("active", "paused", "needs_attention", "disabled")

_INTEGRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]{0,62}")
_CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_PENDING = "patchbay.registry.events"
_MAX_LIMIT = 10_000
_NAME_MAX = 200


# -- values returned -------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant as stored: id, name, status, limits and sync schedule."""

    id: str
    name: str
    status: str
    max_concurrent: int | None
    starts_per_interval: int | None
    start_interval_s: float
    fairness_weight: int
    sync_schedule: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, row: Tenant) -> TenantInfo:
        """From a loaded :class:`~patchbay.runtime.models.Tenant`."""
        return cls(
            id=row.id,
            name=row.name,
            status=row.status,
            max_concurrent=row.max_concurrent,
            starts_per_interval=row.starts_per_interval,
            start_interval_s=row.start_interval_s,
            fairness_weight=row.fairness_weight,
            sync_schedule=row.sync_schedule,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "max_concurrent": self.max_concurrent,
            "starts_per_interval": self.starts_per_interval,
            "start_interval_s": self.start_interval_s,
            "fairness_weight": self.fairness_weight,
            "sync_schedule": self.sync_schedule,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class IntegrationInfo:
    """An integration as stored: its tenant, connector, config (secret fields hold
    references only), schedule override, status and failure counters."""

    id: str
    tenant_id: str
    connector: str
    config: dict[str, Any]
    schedule: str | None
    status: str
    failure_policy: dict[str, Any] | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: dict[str, Any] | None
    consecutive_failures: int
    last_scheduled_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, row: Integration) -> IntegrationInfo:
        """From a loaded :class:`~patchbay.runtime.models.Integration`."""
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            connector=row.connector,
            config=dict(row.config),
            schedule=row.schedule,
            status=row.status,
            failure_policy=row.failure_policy,
            last_success_at=row.last_success_at,
            last_failure_at=row.last_failure_at,
            last_error=row.last_error,
            consecutive_failures=row.consecutive_failures,
            last_scheduled_at=row.last_scheduled_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "connector": self.connector,
            "config": self.config,
            "schedule": self.schedule,
            "status": self.status,
            "failure_policy": self.failure_policy,
            "last_success_at": _iso(self.last_success_at),
            "last_failure_at": _iso(self.last_failure_at),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "last_scheduled_at": _iso(self.last_scheduled_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event of the audit stream: what happened to an integration, when, and details
    (``data``: never a secret value)."""

    id: int
    integration_id: str
    tenant_id: str
    at: datetime
    kind: str
    data: dict[str, Any]

    @classmethod
    def from_model(cls, row: IntegrationEvent) -> AuditEvent:
        """From a loaded :class:`~patchbay.runtime.models.IntegrationEvent`."""
        return cls(
            id=row.id,
            integration_id=row.integration_id,
            tenant_id=row.tenant_id,
            at=row.at,
            kind=row.kind,
            data=dict(row.data),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "integration_id": self.integration_id,
            "tenant_id": self.tenant_id,
            "at": _iso(self.at),
            "kind": self.kind,
            "data": self.data,
        }


class EventSink(Protocol):
    """Exports audit events to an external stream: called after commit with each new
    event, in order; may be a plain function or a coroutine function. At least once, best
    effort (see the module docstring): make it idempotent on ``event.id``."""

    def __call__(self, event: AuditEvent) -> Awaitable[None] | None:
        """Handle one committed event."""
        ...


@dataclass(frozen=True, slots=True)
class ResumeContext:
    """What the ``on_resume`` hook gets: the resume's transaction (as the SQLAlchemy
    ``session`` and as its psycopg ``connection``: write through either, so everything
    commits or rolls back together), the integration as it now is (``active``), the status
    it had, and who resumed it (``actor``, may be None)."""

    session: AsyncSession
    connection: psycopg.AsyncConnection[Any]
    integration: IntegrationInfo
    previous_status: str
    actor: str | None


class ResumeHook(Protocol):
    """Called by :meth:`Registry.resume` inside its transaction, after the integration is
    back to ``active`` with its counters reset and its ``resumed`` event appended, before
    commit: the failure policy resolves the open incident here. Raising aborts the resume
    (nothing is written). Events appended with :meth:`Registry.append_event` through
    ``ctx.session`` reach the sinks; rows written through ``ctx.connection`` do not (an
    exporter catches up with :meth:`Registry.stream`)."""

    def __call__(self, ctx: ResumeContext) -> Awaitable[None]:
        """Finish the resume described by ``ctx``."""
        ...


# -- validation --------------------------------------------------------------------------------


def validate_cron(expression: object, what: str = "schedule") -> str:
    """``expression`` stripped if it is a five-field cron expression (or ``@hourly``,
    ``@daily``, ...), else :class:`InvalidCron`."""
    if not isinstance(expression, str) or not 1 <= len(expression.strip()) <= 200:
        raise InvalidCron(f"{what} must be a cron expression of 1-200 characters")
    text = " ".join(expression.split())
    if text.lower() in _CRON_ALIASES:
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidCron(
            f"{what} {expression!r} has {len(fields)} field(s); use five ({_CRON_FIELDS}) "
            f"or one of {', '.join(sorted(_CRON_ALIASES))}"
        )
    # croniter's R (random) and H (hashed) would give each daemon its own fire times.
    if any(part[:1].upper() in {"R", "H"} for field in fields for part in field.split(",")):
        raise InvalidCron(f"{what} {expression!r}: random (R) and hashed (H) are not supported")
    if not croniter.is_valid(text):
        raise InvalidCron(f"{what} {expression!r} is not a valid cron expression ({_CRON_FIELDS})")
    return text


def _tenant_id(value: object) -> str:
    try:
        return validate_tenant(value)
    except InvalidName as exc:
        raise InvalidId(str(exc)) from None


def _integration_id(value: object) -> str:
    if not isinstance(value, str) or not _INTEGRATION_ID.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise InvalidId(
            f"invalid integration id {shown}: use 1-100 characters of letters, digits and "
            "'_ . -', starting with a letter or digit"
        )
    return value


def _optional_count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidLimits(f"{name} must be a whole number >= 1 (or unset), got {value!r}")
    if value > 2**31 - 1:
        raise InvalidLimits(f"{name} must be at most {2**31 - 1}, got {value!r}")
    return value


def _limits(
    max_concurrent: object,
    starts_per_interval: object,
    start_interval_s: object,
    fairness_weight: object,
) -> dict[str, Any]:
    if (
        isinstance(start_interval_s, bool)
        or not isinstance(start_interval_s, int | float)
        or not math.isfinite(start_interval_s)
        or start_interval_s <= 0
    ):
        raise InvalidLimits(
            f"start_interval_s must be a number of seconds > 0, got {start_interval_s!r}"
        )
    if (
        isinstance(fairness_weight, bool)
        or not isinstance(fairness_weight, int)
        or not 1 <= fairness_weight <= 1000
    ):
        raise InvalidLimits(
            f"fairness_weight must be a whole number 1-1000, got {fairness_weight!r}"
        )
    return {
        "max_concurrent": _optional_count("max_concurrent", max_concurrent),
        "starts_per_interval": _optional_count("starts_per_interval", starts_per_interval),
        "start_interval_s": float(start_interval_s),
        "fairness_weight": fairness_weight,
    }


def _config_message(connector: str, exc: ValidationError) -> str:
    # Field and reason only: the input may be a secret pasted in the wrong place.
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "(config)"
        problems.append(f"{where}: {error['msg']}")
    return f"config for connector {connector!r} is invalid: " + "; ".join(problems)


def _is_secret_error(error: Mapping[str, Any], secrets: set[str]) -> bool:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    return error.get("type") == "value_error" and (
        (bool(loc) and loc[0] in secrets) or "secret reference" in str(error.get("msg"))
    )


# -- the registry ------------------------------------------------------------------------------


ConnectorClasses = Mapping[str, type[Connector[Any]]] | Iterable[type[Connector[Any]]]


class Registry:
    """Tenants and integrations (Python API).

    ``database_url`` (a plain ``postgresql://`` URL) and ``schema`` (default ``patchbay``)
    say where; or pass an ``engine`` made by :func:`patchbay.runtime.models.create_engine`
    (shared, not disposed by :meth:`close`). ``connectors``: the connector classes
    integrations may use, a mapping by name or an iterable (default: every installed one,
    found on first use with :func:`patchbay.connectors.discover`). ``vault`` resolves
    secret references for ``check=True`` (scoped to the integration's tenant).
    ``event_sinks``: see :class:`EventSink`. ``on_resume``: see :class:`ResumeHook`
    (default: none). ``http_factory`` makes the HTTP client of ``check()`` (default
    :class:`~patchbay.connectors.HttpClient`); ``check_timeout`` bounds it (default 30 s).
    ``clock``: where timestamps come from (default: the database's ``now()``).

    Use as ``async with Registry(url) as registry:`` (or call :meth:`close`).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "patchbay",
        engine: AsyncEngine | None = None,
        connectors: ConnectorClasses | None = None,
        vault: Vault | None = None,
        event_sinks: Sequence[EventSink] = (),
        on_resume: ResumeHook | None = None,
        http_factory: Callable[[], HttpClient] | None = None,
        check_timeout: float = 30.0,
        clock: Clock | None = None,
        pool_size: int = 5,
    ) -> None:
        if engine is None:
            if database_url is None:
                raise InvalidRegistryInput("Registry needs a database_url or an engine")
            engine = create_engine(
                database_url,
                schema=schema,
                pool_size=pool_size,
                max_overflow=0,
                connect_args={"application_name": "patchbay-registry"},
            )
            self._owns_engine = True
        else:
            self._owns_engine = False
        if isinstance(check_timeout, bool) or not check_timeout > 0:
            raise InvalidRegistryInput(f"check_timeout must be > 0 seconds, got {check_timeout!r}")
        self.engine = engine
        self.schema = schema
        self.vault = vault
        self.event_sinks: list[EventSink] = list(event_sinks)
        self.on_resume = on_resume
        self.check_timeout = float(check_timeout)
        self._http_factory = http_factory or HttpClient
        self._clock = clock
        self._connectors = None if connectors is None else _connector_map(connectors)
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def close(self) -> None:
        """Dispose of the engine's connections (unless the engine was passed in)."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connectors ------------------------------------------------------------------------

    @property
    def connectors(self) -> dict[str, type[Connector[Any]]]:
        """The connector classes integrations may use, by name."""
        if self._connectors is None:
            self._connectors = discover()
        return dict(self._connectors)

    def connector_class(self, name: str) -> type[Connector[Any]]:
        """A connector class by name; raises :class:`UnknownConnector`."""
        known = self.connectors
        if not isinstance(name, str) or name not in known:
            listed = ", ".join(sorted(known)) or "none installed"
            raise UnknownConnector(f"no connector named {name!r} (known: {listed})")
        return known[name]

    # -- transactions and events -----------------------------------------------------------

    def _now(self) -> datetime | ColumnElement[datetime]:
        moment = None if self._clock is None else self._clock.now()
        return func.now() if moment is None else moment

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction; events appended with :meth:`append_event` go to the
        sinks once it commits."""
        async with self._sessions() as session:
            async with session.begin():
                session.info[_PENDING] = []
                yield session
            events: list[AuditEvent] = session.info.pop(_PENDING, [])
        await self._publish(events)

    async def append_event(
        self,
        session: AsyncSession,
        integration: IntegrationInfo | Integration,
        kind: str,
        data: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an event of ``integration`` in ``session``'s transaction (one opened by
        :meth:`transaction`, or a hook's); ``data`` must be JSON and hold no secret."""
        _event_kind(kind)
        statement = (
            insert(IntegrationEvent)
            .values(
                integration_id=integration.id,
                tenant_id=integration.tenant_id,
                kind=kind,
                data=dict(data or {}),
                at=self._now(),
            )
            .returning(IntegrationEvent)
        )
        row = (await session.scalars(statement)).one()
        event = AuditEvent.from_model(row)
        pending = session.info.get(_PENDING)
        if pending is not None:
            pending.append(event)
        return event

    async def _publish(self, events: list[AuditEvent]) -> None:
        for event in events:
            for sink in self.event_sinks:
                try:
                    result = sink(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception(
                        "event sink %r failed on event %s (%s of %s); it is not retried",
                        sink,
                        event.id,
                        event.kind,
                        event.integration_id,
                    )

    # -- tenants ---------------------------------------------------------------------------

    async def add_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
        starts_per_interval: int | None = None,
        start_interval_s: float = 60.0,
        fairness_weight: int = 1,
        sync_schedule: str | None = None,
    ) -> TenantInfo:
        """Register a tenant. Limits: ``max_concurrent`` jobs at once (None: unlimited),
        ``starts_per_interval`` job starts per ``start_interval_s`` seconds (None: no rate
        limit), ``fairness_weight`` 1-1000 (turns per round in fair dispatch);
        ``sync_schedule``: cron of its syncs (None: the deployment's default). Raises
        :class:`TenantExists` when the id is taken."""
        tenant_id = _tenant_id(tenant_id)
        display = tenant_id if name is None else name
        if not isinstance(display, str) or not 1 <= len(display.strip()) <= _NAME_MAX:
            raise InvalidRegistryInput(f"tenant name must be 1-{_NAME_MAX} characters")
        values = _limits(max_concurrent, starts_per_interval, start_interval_s, fairness_weight)
        cron = None if sync_schedule is None else validate_cron(sync_schedule, "sync_schedule")
        now = self._now()
        statement = (
            insert(Tenant)
            .values(
                id=tenant_id,
                name=display.strip(),
                sync_schedule=cron,
                created_at=now,
                updated_at=now,
                **values,
            )
            .on_conflict_do_nothing(index_elements=[Tenant.id])
            .returning(Tenant)
        )
        async with self.transaction() as session:
            row = (await session.scalars(statement)).one_or_none()
            if row is None:
                raise TenantExists(f"tenant {tenant_id!r} exists already")
            return TenantInfo.from_model(row)

    async def get_tenant(self, tenant_id: str) -> TenantInfo:
        """One tenant; raises :class:`TenantNotFound`."""
        async with self._sessions() as session:
            return TenantInfo.from_model(await self._tenant(session, tenant_id))

    async def list_tenants(self, *, status: str | None = None) -> list[TenantInfo]:
        """Tenants by id, optionally only those of one ``status`` (active, disabled)."""
        query = select(Tenant).order_by(Tenant.id)
        if status is not None:
            if status not in TENANT_STATUSES:
                raise InvalidRegistryInput(
                    f"tenant status must be one of {', '.join(TENANT_STATUSES)}, got {status!r}"
                )
            query = query.where(Tenant.status == status)
        async with self._sessions() as session:
            return [TenantInfo.from_model(row) for row in await session.scalars(query)]

    async def disable_tenant(self, tenant_id: str) -> TenantInfo:
        """Disable a tenant: it takes no new integrations, and its integrations can be
        neither resumed nor synced by hand (the scheduler skips disabled tenants). Its
        integrations keep their own status. Disabling a disabled tenant changes nothing."""
        async with self.transaction() as session:
            row = await self._tenant(session, tenant_id, lock=True)
            if row.status == "disabled":
                return TenantInfo.from_model(row)
            statement = (
                update(Tenant)
                .where(Tenant.id == row.id)
                .values(status="disabled", updated_at=self._now())
                .returning(Tenant)
            )
            updated = (
                await session.scalars(statement, execution_options={"populate_existing": True})
            ).one()
            return TenantInfo.from_model(updated)

    async def _tenant(
        self,
        session: AsyncSession,
        tenant_id: object,
        *,
        lock: bool = False,
        share: bool = False,
    ) -> Tenant:
        # ``share``: the tenant's status cannot change before this transaction ends, while
        # other transactions that only read it (adding integrations) go on in parallel.
        if not isinstance(tenant_id, str):
            raise TenantNotFound(f"no tenant {tenant_id!r}")
        query = select(Tenant).where(Tenant.id == tenant_id)
        if lock or share:
            query = query.with_for_update(read=not lock)
        row = (await session.scalars(query)).one_or_none()
        if row is None:
            raise TenantNotFound(f"no tenant {tenant_id!r} (add it with `patchbay tenants add`)")
        return row

    # -- integrations ----------------------------------------------------------------------

    async def add_integration(
        self,
        integration_id: str,
        *,
        tenant: str,
        connector: str,
        config: Mapping[str, Any] | BaseModel,
        schedule: str | None = None,
        check: bool = False,
        actor: str | None = None,
    ) -> IntegrationInfo:
        """Register an integration of ``tenant`` using ``connector``. ``config`` is
        validated by the connector's model (secret fields must be references to this
        tenant's secrets); ``schedule`` overrides the sync cron. With ``check=True`` the
        connector's ``check()`` runs first, resolving secrets through the vault for this
        tenant only. Appends a ``created`` event. Raises :class:`IntegrationExists`,
        :class:`TenantNotFound`, :class:`TenantDisabled`, :class:`UnknownConnector`,
        :class:`InvalidConfig` / :class:`SecretNotReference`, :class:`InvalidCron` or
        :class:`CheckFailed`, and then wrote nothing."""
        integration_id = _integration_id(integration_id)
        tenant = _tenant_id(tenant)
        cls = self.connector_class(connector)
        cron = None if schedule is None else validate_cron(schedule)
        # Refusals that need the database come first (an unknown tenant explains a config
        # error about its references) and again under lock in the transaction below.
        async with self._sessions() as session:
            self._require_active(await self._tenant(session, tenant))
            if await session.get(Integration, integration_id) is not None:
                raise IntegrationExists(f"integration {integration_id!r} exists already")
        model = self._validate_config(cls, tenant, config)
        stored = model.model_dump(mode="json", exclude_unset=True)
        if check:
            await self._check(cls, tenant, integration_id, model)
        now = self._now()
        statement = (
            insert(Integration)
            .values(
                id=integration_id,
                tenant_id=tenant,
                connector=cls.name,
                config=stored,
                schedule=cron,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[Integration.id])
            .returning(Integration)
        )
        async with self.transaction() as session:
            self._require_active(await self._tenant(session, tenant, share=True))
            row = (await session.scalars(statement)).one_or_none()
            if row is None:
                raise IntegrationExists(f"integration {integration_id!r} exists already")
            info = IntegrationInfo.from_model(row)
            data: dict[str, Any] = {"connector": cls.name, "version": cls.version}
            if cron is not None:
                data["schedule"] = cron
            if check:
                data["checked"] = True
            await self.append_event(session, info, "created", _with_actor(data, actor))
            return info

    async def update_integration(
        self,
        integration_id: str,
        *,
        config: Mapping[str, Any] | BaseModel | None = None,
        schedule: str | None = None,
        clear_schedule: bool = False,
        check: bool = False,
        actor: str | None = None,
    ) -> IntegrationInfo:
        """Replace an integration's ``config`` (validated as in :meth:`add_integration`,
        optionally checked) and/or its ``schedule`` (``clear_schedule=True``: back to the
        tenant's / connector's default). Appends a ``config_changed`` event naming what
        changed (never values of secrets: the config holds references only). Changing
        nothing records nothing."""
        if schedule is not None and clear_schedule:
            raise InvalidRegistryInput("pass schedule or clear_schedule, not both")
        current = await self.get_integration(integration_id)
        cls = self.connector_class(current.connector)
        stored: dict[str, Any] | None = None
        model: BaseModel | None = None
        if config is not None:
            model = self._validate_config(cls, current.tenant_id, config)
            stored = model.model_dump(mode="json", exclude_unset=True)
        cron = None if schedule is None else validate_cron(schedule)
        if model is not None and check:
            await self._check(cls, current.tenant_id, current.id, model)
        async with self.transaction() as session:
            row = await self._integration(session, integration_id, lock=True)
            old_config, old_schedule = dict(row.config), row.schedule
            changes: dict[str, Any] = {}
            changed: list[str] = []
            if stored is not None and stored != old_config:
                changes["config"] = stored
                keys = set(stored) | set(old_config)
                changed = sorted(k for k in keys if stored.get(k) != old_config.get(k))
            if (cron is not None or clear_schedule) and cron != old_schedule:
                changes["schedule"] = cron
            if not changes:
                return IntegrationInfo.from_model(row)
            statement = (
                update(Integration)
                .where(Integration.id == row.id)
                .values(updated_at=self._now(), **changes)
                .returning(Integration)
            )
            updated = (
                await session.scalars(statement, execution_options={"populate_existing": True})
            ).one()
            info = IntegrationInfo.from_model(updated)
            data: dict[str, Any] = {}
            if changed:
                data["config_fields"] = changed
            if "schedule" in changes:
                data["schedule"] = {"from": old_schedule, "to": cron}
            await self.append_event(session, info, "config_changed", _with_actor(data, actor))
            return info

    async def get_integration(self, integration_id: str) -> IntegrationInfo:
        """One integration; raises :class:`IntegrationNotFound`."""
        async with self._sessions() as session:
            return IntegrationInfo.from_model(await self._integration(session, integration_id))

    async def list_integrations(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        connector: str | None = None,
    ) -> list[IntegrationInfo]:
        """Integrations by tenant and id, optionally filtered by tenant, status (active,
        paused, needs_attention, disabled) and connector."""
        query = select(Integration).order_by(Integration.tenant_id, Integration.id)
        if tenant is not None:
            query = query.where(Integration.tenant_id == tenant)
        if status is not None:
            if status not in INTEGRATION_STATUSES:
                raise InvalidRegistryInput(
                    f"integration status must be one of {', '.join(INTEGRATION_STATUSES)}, "
                    f"got {status!r}"
                )
            query = query.where(Integration.status == status)
        if connector is not None:
            query = query.where(Integration.connector == connector)
        async with self._sessions() as session:
            return [IntegrationInfo.from_model(row) for row in await session.scalars(query)]

    async def pause(
        self, integration_id: str, *, reason: str | None = None, actor: str | None = None
    ) -> IntegrationInfo:
        """Pause an active (or needs-attention) integration: the scheduler skips it until
        it is resumed. Appends a ``paused`` event. A disabled integration cannot be paused
        (:class:`InvalidTransition`); a paused one stays as it is."""
        async with self.transaction() as session:
            row = await self._integration(session, integration_id, lock=True)
            if row.status == "paused":
                return IntegrationInfo.from_model(row)
            if row.status == "disabled":
                raise InvalidTransition(
                    f"integration {row.id!r} is disabled; resume it instead of pausing it"
                )
            return await self._transition(
                session, row, "paused", "paused", {"reason": reason}, actor
            )

    async def resume(self, integration_id: str, *, actor: str | None = None) -> IntegrationInfo:
        """Return a paused, needs-attention or disabled integration to ``active`` with
        its consecutive failures reset to 0, and call the ``on_resume`` hook in the same
        transaction (the failure policy resolves the open incident there). Appends a
        ``resumed`` event. An active integration stays as it is. Raises
        :class:`TenantDisabled` when its tenant is disabled."""
        async with self.transaction() as session:
            row = await self._integration(session, integration_id, lock=True)
            if row.status == "active":
                return IntegrationInfo.from_model(row)
            self._require_active(await self._tenant(session, row.tenant_id, share=True))
            previous = row.status
            info = await self._transition(
                session,
                row,
                "active",
                "resumed",
                {"consecutive_failures": row.consecutive_failures},
                actor,
                consecutive_failures=0,
            )
            if self.on_resume is not None:
                await self.on_resume(
                    ResumeContext(session, await _driver_connection(session), info, previous, actor)
                )
            return info

    async def disable(
        self, integration_id: str, *, reason: str | None = None, actor: str | None = None
    ) -> IntegrationInfo:
        """Disable an integration: it never runs until resumed. Appends a ``disabled``
        event. A disabled integration stays as it is."""
        async with self.transaction() as session:
            row = await self._integration(session, integration_id, lock=True)
            if row.status == "disabled":
                return IntegrationInfo.from_model(row)
            return await self._transition(
                session, row, "disabled", "disabled", {"reason": reason}, actor
            )

    async def _transition(
        self,
        session: AsyncSession,
        row: Integration,
        status: str,
        kind: str,
        data: dict[str, Any],
        actor: str | None,
        **more: Any,
    ) -> IntegrationInfo:
        previous = row.status
        statement = (
            update(Integration)
            .where(Integration.id == row.id)
            .values(status=status, updated_at=self._now(), **more)
            .returning(Integration)
        )
        updated = (
            await session.scalars(statement, execution_options={"populate_existing": True})
        ).one()
        info = IntegrationInfo.from_model(updated)
        details = {"from": previous, **{k: v for k, v in data.items() if v is not None}}
        await self.append_event(session, info, kind, _with_actor(details, actor))
        return info

    async def _integration(
        self, session: AsyncSession, integration_id: object, *, lock: bool = False
    ) -> Integration:
        if not isinstance(integration_id, str):
            raise IntegrationNotFound(f"no integration {integration_id!r}")
        query = select(Integration).where(Integration.id == integration_id)
        if lock:
            query = query.with_for_update()
        row = (await session.scalars(query)).one_or_none()
        if row is None:
            raise IntegrationNotFound(f"no integration {integration_id!r}")
        return row

    @staticmethod
    def _require_active(tenant: Tenant) -> None:
        if tenant.status != "active":
            raise TenantDisabled(f"tenant {tenant.id!r} is disabled")

    # -- config and check ------------------------------------------------------------------

    def _validate_config(
        self, cls: type[Connector[Any]], tenant: str, config: Mapping[str, Any] | BaseModel
    ) -> BaseModel:
        if isinstance(config, BaseModel):
            document: Any = config.model_dump(mode="json", exclude_unset=True)
        elif isinstance(config, Mapping):
            document = dict(config)
        else:
            raise InvalidConfig(
                f"config for connector {cls.name!r} must be an object (a mapping), "
                f"got {type(config).__name__}"
            )
        secrets = set(secret_fields(cls.config_model))
        try:
            model = cls.config_model.model_validate(document)
        except ValidationError as exc:
            message = _config_message(cls.name, exc)
            if any(_is_secret_error(e, secrets) for e in exc.errors(include_input=False)):
                raise SecretNotReference(
                    message + ". Store secrets with `patchbay secrets put "
                    f"{tenant} <name>` and put secret://{tenant}/<name> in the config"
                ) from None
            raise InvalidConfig(message) from None
        for name in sorted(secrets):
            value = getattr(model, name, None)
            if value is None:
                continue
            try:
                owner = parse_ref(value).tenant
            except InvalidReference:  # pragma: no cover - the model validated it
                raise SecretNotReference(f"config field {name!r} is not a reference") from None
            if owner != tenant:
                raise SecretNotReference(
                    f"config field {name!r} references a secret of tenant {owner!r}; an "
                    f"integration of tenant {tenant!r} may only use secret://{tenant}/..."
                )
        return model

    async def _check(
        self, cls: type[Connector[Any]], tenant: str, integration_id: str, model: BaseModel
    ) -> None:
        vault = self.vault

        async def resolve(ref: str) -> str:
            if vault is None:
                raise CheckFailed(
                    f"the config references {ref} but the registry has no vault to resolve it"
                )
            return await vault.for_tenant(tenant).resolve(ref)

        logger = logging.LoggerAdapter(
            logging.getLogger(f"patchbay.connectors.{cls.name}"),
            {"tenant": tenant, "integration": integration_id, "job_type": "check"},
        )
        http = self._http_factory()
        ctx: CheckContext[Any] = CheckContext(
            tenant=tenant,
            integration=integration_id,
            config=model,
            http=http,
            resolve=resolve,
            log=logger,
        )
        try:
            async with asyncio.timeout(self.check_timeout):
                await cls().check(ctx)
        except CheckFailed:
            raise
        except TimeoutError:
            raise CheckFailed(
                f"check of connector {cls.name!r} did not finish within {self.check_timeout:g} s"
            ) from None
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if vault is not None:
                reason = vault.redactor.redact(reason)
            raise CheckFailed(f"check of connector {cls.name!r} failed: {reason}") from None
        finally:
            await http.aclose()

    # -- audit stream ----------------------------------------------------------------------

    async def events(
        self, integration_id: str, *, since_id: int | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        """An integration's events in order, after ``since_id`` (exclusive), at most
        ``limit`` (1-10000). Raises :class:`IntegrationNotFound`."""
        limit = _limit(limit)
        query = (
            select(IntegrationEvent)
            .where(IntegrationEvent.integration_id == integration_id)
            .order_by(IntegrationEvent.id)
            .limit(limit)
        )
        if since_id is not None:
            query = query.where(IntegrationEvent.id > _since(since_id))
        async with self._sessions() as session:
            await self._integration(session, integration_id)
            return [AuditEvent.from_model(row) for row in await session.scalars(query)]

    async def stream(self, *, since_id: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        """Events of every integration in ``id`` order, after ``since_id``: how an
        exporter catches up after a restart. Ids are given out at insert, not at commit,
        so a transaction that commits late can add an id below one already read: an
        exporter that needs every event re-reads a short overlap (and dedupes by id)."""
        limit = _limit(limit)
        query = select(IntegrationEvent).order_by(IntegrationEvent.id).limit(limit)
        if since_id is not None:
            query = query.where(IntegrationEvent.id > _since(since_id))
        async with self._sessions() as session:
            return [AuditEvent.from_model(row) for row in await session.scalars(query)]

    async def record_event(
        self, integration_id: str, kind: str, data: Mapping[str, Any] | None = None
    ) -> AuditEvent:
        """Append an event of another service (``synced`` with counts, ``needs_attention``,
        ...) in a transaction of its own; sinks hear it after commit."""
        _event_kind(kind)
        async with self.transaction() as session:
            row = await self._integration(session, integration_id)
            return await self.append_event(session, row, kind, data)

    # -- running now -----------------------------------------------------------------------

    async def sync_now(
        self,
        integration_id: str,
        executor: ConnectorExecutor,
        *,
        job_type: str | None = None,
        full_refresh: bool = False,
        actor: str | None = None,
    ) -> list[uuid.UUID | None]:
        """Enqueue a sync of the integration now: one job per sync job type of its
        connector (or only ``job_type``), tenant = the integration's tenant, group = the
        integration, fairness key = the tenant, in one transaction with a
        ``sync_requested`` event. Refused for a disabled integration or tenant; a paused
        or needs-attention integration may be synced by hand (to try a fix before
        resuming). Returns the job ids."""
        connector = executor.connector((await self.get_integration(integration_id)).connector)
        names = (
            [connector.job_type(job_type).name]
            if job_type is not None
            else [n for n, j in connector.job_types().items() if j.kind == "sync"]
        )
        if not names:
            raise InvalidRegistryInput(f"connector {connector.name!r} declares no sync job type")
        await executor.ensure_queues()
        async with self.transaction() as session:
            row = await self._integration(session, integration_id, lock=True)
            self._require_runnable(row, await self._tenant(session, row.tenant_id, share=True))
            conn = await _driver_connection(session)
            jobs: list[uuid.UUID | None] = []
            for name in names:
                jobs.append(
                    await executor.send_sync(
                        row.connector,
                        name,
                        tenant=row.tenant_id,
                        integration=row.id,
                        config=row.config,
                        full_refresh=full_refresh,
                        conn=conn,
                        group=row.id,
                        fairness_key=row.tenant_id,
                    )
                )
            data: dict[str, Any] = {
                "job_types": names,
                "jobs": [None if j is None else str(j) for j in jobs],
            }
            if full_refresh:
                data["full_refresh"] = True
            await self.append_event(session, row, "sync_requested", _with_actor(data, actor))
        return jobs

    async def start_backfill(
        self,
        integration_id: str,
        executor: ConnectorExecutor,
        *,
        since: datetime,
        until: datetime,
        job_type: str | None = None,
        actor: str | None = None,
    ) -> uuid.UUID:
        """Start a backfill of ``[since, until)`` (timezone-aware) with the connector's
        backfill job type (``job_type`` when it has several); appends a
        ``backfill_started`` event once it is enqueued. Refused for a disabled integration
        or tenant. Returns the backfill's id."""
        info = await self.get_integration(integration_id)
        connector = executor.connector(info.connector)
        if job_type is not None:
            name = connector.job_type(job_type).name
        else:
            names = [n for n, j in connector.job_types().items() if j.kind == "backfill"]
            if len(names) != 1:
                raise InvalidRegistryInput(
                    f"connector {connector.name!r} declares {len(names)} backfill job types"
                    + (f" ({', '.join(names)}): pass job_type" if names else "")
                )
            name = names[0]
        async with self._sessions() as session:
            self._require_runnable(
                await self._integration(session, info.id),
                await self._tenant(session, info.tenant_id),
            )
        await executor.ensure_queues()
        # The executor enqueues the windows in a transaction of its own; the event follows
        # it (a crash in between leaves a backfill without its event, never the reverse).
        backfill_id = await executor.start_backfill(
            info.connector,
            name,
            tenant=info.tenant_id,
            integration=info.id,
            config=info.config,
            since=since,
            until=until,
        )
        async with self.transaction() as session:
            row = await self._integration(session, info.id)
            data = {
                "job_type": name,
                "backfill_id": str(backfill_id),
                "since": since.isoformat(),
                "until": until.isoformat(),
            }
            await self.append_event(session, row, "backfill_started", _with_actor(data, actor))
        return backfill_id

    @staticmethod
    def _require_runnable(row: Integration, tenant: Tenant) -> None:
        if row.status == "disabled":
            raise InvalidTransition(f"integration {row.id!r} is disabled; resume it first")
        Registry._require_active(tenant)


async def _driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under ``session``, in the session's transaction."""
    raw = await (await session.connection()).get_raw_connection()
    conn = raw.driver_connection
    if not isinstance(conn, psycopg.AsyncConnection):  # pragma: no cover - engine misuse
        raise TypeError("the registry's engine must use the psycopg driver")
    return conn


def _event_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _EVENT_KIND.fullmatch(kind):
        raise InvalidRegistryInput(f"event kind must be a lower-case identifier, got {kind!r}")
    return kind


def _with_actor(data: dict[str, Any], actor: str | None) -> dict[str, Any]:
    if actor is not None:
        data["by"] = actor
    return data


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise InvalidRegistryInput(f"limit must be 1-{_MAX_LIMIT}, got {limit!r}")
    return limit


def _since(since_id: object) -> int:
    if isinstance(since_id, bool) or not isinstance(since_id, int) or since_id < 0:
        raise InvalidRegistryInput(f"since_id must be a whole number >= 0, got {since_id!r}")
    return since_id


def _connector_map(connectors: ConnectorClasses) -> dict[str, type[Connector[Any]]]:
    found: dict[str, type[Connector[Any]]] = {}
    items = (
        connectors.items() if isinstance(connectors, Mapping) else ((None, c) for c in connectors)
    )
    for key, cls in items:
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise InvalidConnector(f"{cls!r} is not a Connector subclass")
        cls.validate_class()
        if key is not None and key != cls.name:
            raise InvalidConnector(f"connector {cls.name!r} is registered under the name {key!r}")
        found[cls.name] = cls
    return found
