"""Runs connector job types on the queue.

Guarantees
    Records and the cursor state of a run commit in one transaction (see
    :mod:`patchbay.connectors.records`), fenced by the job's attempt: a worker that lost its
    lease cannot write an older cursor over a newer one. A backfill window is marked done in
    the transaction that writes its last records, so a resumed backfill re-sends exactly the
    windows not done.

Error mapping
    :class:`AuthError` and :class:`ConfigError` fail the job at once (``retryable = False``);
    :class:`RateLimited` puts it back for the provider's Retry-After without spending an
    attempt; anything else is transient and retried by the queue's policy. Hooks hear about
    every success and failure (``final`` when no retry follows): the runtime's failure
    policy is one.

Each job carries references, never secret values: secrets are resolved just in time, for
the job's own tenant only, and registered with the vault's redactor.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ValidationError

from patchbay.queue import (
    InvalidOption,
    Job,
    JobSpec,
    QueueClient,
    QueueNotFound,
    Snooze,
    Statements,
    Worker,
)
from patchbay.secrets import (
    CrossTenantReference,
    InvalidReference,
    SecretNotFound,
    Vault,
    parse_ref,
)

from .config import secret_fields
from .connector import Connector, JobType, Window, upgrade
from .context import JobContext, RunStats
from .errors import ConfigError, ConnectorNotFound, TransientError
from .http import HttpClient
from .records import Destination, PostgresDestination, Record

__all__ = ["ConnectorExecutor", "ExecutionHooks", "RunInfo"]

log = logging.getLogger("patchbay.connectors")
_tracer = trace.get_tracer("patchbay.connectors")

PAYLOAD_FORMAT = 1


class _LeaseLost(TransientError):
    """The job's attempt is no longer the current one; its writes are refused."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who ran: the connector, job type, tenant, integration and the queue job."""

    connector: str
    job_type: str
    tenant: str
    integration: str
    job: Job


class ExecutionHooks(Protocol):
    """Told about every run's outcome (the runtime's failure policy implements this)."""

    async def on_success(self, run: RunInfo, stats: RunStats) -> None:
        """A run completed."""
        ...

    async def on_failure(self, run: RunInfo, error: BaseException, final: bool) -> None:
        """A run failed; ``final`` when the queue will not retry it."""
        ...


class ConnectorExecutor:
    """Sends and runs the job types of a set of connectors on one queue schema.

    ``vault`` resolves secret references (required as soon as a config holds one);
    ``destination`` receives records (default: Postgres ``connector_record``);
    ``http_factory`` makes each run's HTTP client (tests pass a transport here).
    Settings of the queues it creates: ``retry_limit`` (default 4), ``retry_delay``
    (default 10 s, doubled per retry), ``expire_in`` (default 900 s lease).
    """

    def __init__(
        self,
        queue: QueueClient,
        connectors: Iterable[Connector[Any]],
        *,
        vault: Vault | None = None,
        destination: Destination | None = None,
        hooks: ExecutionHooks | None = None,
        http_factory: Callable[[], HttpClient] | None = None,
        retry_limit: int = 4,
        retry_delay: float = 10.0,
        expire_in: float = 900.0,
    ) -> None:
        self.queue = queue
        self.vault = vault
        self.connectors: dict[str, Connector[Any]] = {}
        for connector in connectors:
            type(connector).validate_class()
            self.connectors[connector.name] = connector
        self.destination: Destination = destination or PostgresDestination(queue.schema)
        self.hooks = hooks
        self._http_factory = http_factory or HttpClient
        self._sql = Statements(queue.schema, package="patchbay.connectors")
        self.queue_defaults = {
            "retry_limit": retry_limit,
            "retry_delay": retry_delay,
            "expire_in": expire_in,
        }
        self._job_table = sql.SQL(
            "select 1 from {}.job where id = %s and attempt = %s and state = 'active' for share"
        ).format(sql.Identifier(queue.schema))

    # -- lookup ------------------------------------------------------------------------

    def connector(self, name: str) -> Connector[Any]:
        """An executor's connector by name; raises ConnectorNotFound."""
        try:
            return self.connectors[name]
        except KeyError:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise ConnectorNotFound(f"no connector {name!r} (installed: {known})") from None

    def _job_type(self, connector: str, job_type: str) -> tuple[Connector[Any], JobType]:
        found = self.connector(connector)
        return found, found.job_type(job_type)

    # -- queues and workers --------------------------------------------------------------

    async def ensure_queues(self) -> list[str]:
        """Create the queue of every job type that does not exist yet; returns all names.

        A sync job type's queue is fair (tenants take turns) with the ``stately`` policy:
        keyed by integration, at most one sync of an integration waits and one runs, so
        two syncs of one integration never overlap and a slow one causes no pile-up."""
        names: list[str] = []
        for connector in self.connectors.values():
            for job_type, kind in connector.job_types().items():
                name = connector.queue_name(job_type)
                names.append(name)
                settings: dict[str, Any] = dict(self.queue_defaults)
                if kind.kind == "sync":
                    settings.update(fair=True, policy="stately")
                try:
                    await self.queue.get_queue(name)
                except QueueNotFound:
                    await self.queue.create_queue(name, **settings)
        return names

    async def start(self, *, concurrency: int = 10, poll_interval: float = 1.0) -> list[Worker]:
        """Start a worker for every job type of every connector."""
        await self.ensure_queues()
        workers = []
        for connector in self.connectors.values():
            for name, job_type in connector.job_types().items():
                workers.append(
                    await self.queue.work(
                        connector.queue_name(name),
                        self._handler(connector, job_type),
                        concurrency=concurrency,
                        poll_interval=poll_interval,
                    )
                )
        return workers

    # -- sending ---------------------------------------------------------------------------

    def payload(
        self,
        connector: Connector[Any],
        *,
        tenant: str,
        integration: str,
        config: Mapping[str, Any] | BaseModel,
        full_refresh: bool = False,
        correlation_id: str | None = None,
        backfill: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The job payload of one run: ids, the config (references only, validated by the
        connector's model; ConfigError if invalid), versions and a correlation id."""
        config_doc = (
            config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
        )
        _validate_config(connector, config_doc)
        for field in secret_fields(connector.config_model):
            owner = parse_ref(config_doc[field]).tenant if config_doc.get(field) else tenant
            if owner != tenant:
                raise ConfigError(
                    f"config field {field!r} references a secret of tenant {owner!r}, but the "
                    f"integration belongs to tenant {tenant!r}; a job resolves its own "
                    "tenant's secrets only"
                )
        payload: dict[str, Any] = {
            "format": PAYLOAD_FORMAT,
            "v": connector.payload_version,
            "tenant": tenant,
            "integration": integration,
            "config": config_doc,
            "full_refresh": full_refresh,
            "correlation_id": correlation_id or uuid.uuid4().hex,
        }
        if backfill is not None:
            payload["backfill"] = backfill
        return payload

    async def send_sync(
        self,
        connector: str,
        job_type: str,
        *,
        tenant: str,
        integration: str,
        config: Mapping[str, Any] | BaseModel,
        full_refresh: bool = False,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Any,
    ) -> uuid.UUID | None:
        """Enqueue one sync run of an integration (keyed by the integration: with a sync
        queue's ``stately`` policy, an incremental sync already waiting is returned instead
        of adding a second one; a full refresh always gets its own job, limited by group =
        integration); returns the job id."""
        found, kind = self._job_type(connector, job_type)
        if kind.kind != "sync":
            raise InvalidOption(f"{connector}.{job_type} is a {kind.kind}, not a sync")
        payload = self.payload(
            found,
            tenant=tenant,
            integration=integration,
            config=config,
            full_refresh=full_refresh,
        )
        options.setdefault("group", integration)
        if not full_refresh:
            # Joins a sync of the integration that is already waiting; a full refresh is
            # always a job of its own (it must not be swallowed by an incremental one).
            options.setdefault("singleton_key", integration)
        options.setdefault("fairness_key", tenant)
        options.setdefault("priority", kind.priority)
        job_id: uuid.UUID | None = await self.queue.send(
            found.queue_name(job_type), payload, conn=conn, **options
        )
        return job_id

    async def start_backfill(
        self,
        connector: str,
        job_type: str,
        *,
        tenant: str,
        integration: str,
        config: Mapping[str, Any] | BaseModel,
        since: datetime,
        until: datetime,
        rate_key: str | None = None,
    ) -> uuid.UUID:
        """Split ``[since, until)`` into the job type's windows and enqueue one child job
        per window, all in one transaction; returns the backfill's id. ``rate_key`` names
        the rate limit its windows spend (default: ``<connector>:backfill``)."""
        found, kind = self._job_type(connector, job_type)
        if kind.kind != "backfill" or kind.window is None:
            raise InvalidOption(f"{connector}.{job_type} is a {kind.kind}, not a backfill")
        if since.tzinfo is None or until.tzinfo is None or not since < until:
            raise InvalidOption("backfill needs timezone-aware since < until")
        step = kind.window
        total = math.ceil((until - since) / step)
        backfill_id = uuid.uuid4()
        windows = [(i, since + i * step, min(until, since + (i + 1) * step)) for i in range(total)]
        async with self.queue.pool.connection() as conn, conn.transaction():
            await conn.execute(
                self._sql["connector_backfill_insert"],
                {
                    "id": backfill_id,
                    "tenant": tenant,
                    "integration": integration,
                    "connector": connector,
                    "job_type": job_type,
                    "range_start": since,
                    "range_end": until,
                    "window_s": step.total_seconds(),
                    "windows_total": total,
                },
            )
            jobs = await self._send_windows(
                found,
                kind,
                conn,
                backfill_id,
                windows,
                total,
                tenant=tenant,
                integration=integration,
                config=config,
                rate_key=rate_key,
            )
            await conn.execute(
                self._sql["connector_backfill_window_insert_many"],
                {
                    "id": backfill_id,
                    "indexes": [w[0] for w in windows],
                    "starts": [w[1] for w in windows],
                    "ends": [w[2] for w in windows],
                    "jobs": jobs,
                },
            )
        return backfill_id

    async def _send_windows(
        self,
        connector: Connector[Any],
        kind: JobType,
        conn: psycopg.AsyncConnection[Any],
        backfill_id: uuid.UUID,
        windows: list[tuple[int, datetime, datetime]],
        total: int,
        *,
        tenant: str,
        integration: str,
        config: Mapping[str, Any] | BaseModel,
        rate_key: str | None,
    ) -> list[uuid.UUID | None]:
        specs = [
            JobSpec(
                self.payload(
                    connector,
                    tenant=tenant,
                    integration=integration,
                    config=config,
                    backfill={
                        "id": str(backfill_id),
                        "index": index,
                        "total": total,
                        "start": start.isoformat(),
                        "end": end.isoformat(),
                    },
                )
            )
            for index, start, end in windows
        ]
        options: dict[str, Any] = {"priority": kind.priority}
        share = rate_key or (f"{connector.name}:{kind.rate_share}" if kind.rate_share else None)
        if share is not None:
            options["rate_key"] = share
        return await self.queue.send_many(
            connector.queue_name(kind.name), specs, conn=conn, **options
        )

    async def resume_backfill(self, backfill_id: uuid.UUID) -> int:
        """Re-send the windows of a backfill that are not done and whose job no longer
        waits or runs (e.g. failed for good); returns how many were re-sent."""
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["connector_backfill_get"], {"id": backfill_id})
            info = await cur.fetchone()
            if info is None:
                raise InvalidOption(f"no backfill {backfill_id}")
            await cur.execute(self._sql["connector_backfill_pending_windows"], {"id": backfill_id})
            pending = await cur.fetchall()
            found, kind = self._job_type(info["connector"], info["job_type"])
            waiting = await self._waiting_windows(conn, backfill_id)
            windows = [
                (r["window_index"], r["window_start"], r["window_end"])
                for r in pending
                if r["window_index"] not in waiting
            ]
            if not windows:
                return 0
            config = await self._backfill_config(conn, backfill_id)
            jobs = await self._send_windows(
                found,
                kind,
                conn,
                backfill_id,
                windows,
                info["windows_total"],
                tenant=info["tenant"],
                integration=info["integration_id"],
                config=config,
                rate_key=None,
            )
            await conn.execute(
                self._sql["connector_backfill_window_set_job"],
                {"id": backfill_id, "indexes": [w[0] for w in windows], "jobs": jobs},
            )
        return len(windows)

    async def _waiting_windows(
        self, conn: psycopg.AsyncConnection[Any], backfill_id: uuid.UUID
    ) -> set[int]:
        query = sql.SQL(
            "select w.window_index from {s}.connector_backfill_window w"
            " join {s}.job j on j.id = w.job_id"
            " where w.backfill_id = %s and j.state in ('queued', 'retrying', 'active')"
        ).format(s=sql.Identifier(self.queue.schema))
        cur = await conn.execute(query, (backfill_id,))
        return {row[0] for row in await cur.fetchall()}

    async def _backfill_config(
        self, conn: psycopg.AsyncConnection[Any], backfill_id: uuid.UUID
    ) -> dict[str, Any]:
        query = sql.SQL(
            "select j.data -> 'config' from {s}.connector_backfill_window w"
            " join {s}.job j on j.id = w.job_id where w.backfill_id = %s limit 1"
        ).format(s=sql.Identifier(self.queue.schema))
        cur = await conn.execute(query, (backfill_id,))
        row = await cur.fetchone()
        if row is None:
            raise InvalidOption(f"backfill {backfill_id} has no job left to take its config from")
        config: dict[str, Any] = row[0]
        return config

    async def backfill_status(self, backfill_id: uuid.UUID) -> dict[str, Any]:
        """Progress of a backfill: windows done of total, status, times."""
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["connector_backfill_get"], {"id": backfill_id})
            row = await cur.fetchone()
        if row is None:
            raise InvalidOption(f"no backfill {backfill_id}")
        return dict(row)

    # -- running ---------------------------------------------------------------------------

    def _handler(
        self, connector: Connector[Any], job_type: JobType
    ) -> Callable[[Job], Awaitable[dict[str, Any]]]:
        async def handle(job: Job) -> dict[str, Any]:
            return await self.run_job(connector, job_type, job)

        return handle

    async def run_job(self, connector: Connector[Any], kind: JobType, job: Job) -> dict[str, Any]:
        """Run one queue job of ``connector``'s job type ``kind``; returns the run's stats
        (stored as the job's output)."""
        payload: dict[str, Any] = job.data
        tenant, integration = payload["tenant"], payload["integration"]
        run = RunInfo(connector.name, kind.name, tenant, integration, job)
        attributes = {
            "patchbay.queue": job.queue,
            "patchbay.tenant": tenant,
            "patchbay.integration": integration,
            "patchbay.attempt": job.attempt,
            "patchbay.job_id": str(job.id),
        }
        # The span records errors itself, redacted: OpenTelemetry's own exception
        # recording would export the raw message, which may hold a resolved secret.
        with _tracer.start_as_current_span(
            f"{job.queue} run",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                stats = await self._run(connector, kind, job, payload)
            except Snooze:
                raise
            except BaseException as error:
                message = self._redact(f"{type(error).__name__}: {error}")
                span.set_status(Status(StatusCode.ERROR, message))
                span.add_event(
                    "exception",
                    {"exception.type": type(error).__name__, "exception.message": message},
                )
                if self.hooks is not None and isinstance(error, Exception):
                    final = getattr(error, "retryable", True) is False or job.is_last_attempt
                    await self.hooks.on_failure(run, error, final)
                raise
        if self.hooks is not None:
            await self.hooks.on_success(run, stats)
        return stats.to_json()

    def _redact(self, text: str) -> str:
        return text if self.vault is None else self.vault.redactor(text)

    async def _run(
        self, connector: Connector[Any], kind: JobType, job: Job, payload: dict[str, Any]
    ) -> RunStats:
        tenant, integration = payload["tenant"], payload["integration"]
        config_doc = upgrade(
            payload["config"],
            int(payload.get("v", 1)),
            connector.payload_version,
            connector.payload_upgrades,
            "job payload",
        )
        config = _validate_config(connector, config_doc)
        window, state_key = _window_of(kind, payload)
        state = await self._load_state(connector, integration, state_key)
        if payload.get("full_refresh"):
            state = {}
        logger = logging.LoggerAdapter(
            logging.getLogger(f"patchbay.connectors.{connector.name}"),
            {
                "tenant": tenant,
                "integration": integration,
                "job_id": str(job.id),
                "job_type": kind.name,
                "correlation_id": payload.get("correlation_id"),
            },
        )
        http = self._http_factory()
        fence = (job.id, job.attempt)

        async def commit(
            buffered: dict[str, list[tuple[str, Record]]], new_state: dict[str, Any]
        ) -> None:
            await self._commit(connector, integration, state_key, buffered, new_state, fence)

        ctx: JobContext[Any] = JobContext(
            tenant=tenant,
            integration=integration,
            config=config,
            http=http,
            resolve=self._resolver(tenant),
            log=logger,
            job=job,
            job_type=kind.name,
            state=state,
            full_refresh=bool(payload.get("full_refresh")),
            commit=commit,
            correlation_id=str(payload.get("correlation_id", "")),
            redact=self._redact,
        )
        method = connector.method_for(kind.name)
        try:
            if window is None:
                await method(ctx)
            else:
                await method(ctx, window)
            buffered, ctx._buffer = ctx._buffer, {}
            await self._commit(
                connector,
                integration,
                state_key,
                buffered,
                ctx.state,
                fence,
                window_done=None if window is None else (payload["backfill"]["id"], window.index),
            )
            ctx.stats.checkpoints += 1
        finally:
            ctx.stats.http_requests = http.requests
            await http.aclose()
        return ctx.stats

    def _resolver(self, tenant: str) -> Callable[[str], Awaitable[str]]:
        vault = self.vault

        async def resolve(ref: str) -> str:
            if vault is None:
                raise ConfigError(
                    f"the config references {ref} but no vault is configured to resolve it"
                )
            try:
                return await vault.resolve(ref, tenant=tenant)
            except (CrossTenantReference, InvalidReference, SecretNotFound) as exc:
                # Retrying cannot fix these: the configuration (or the vault) needs a person.
                raise ConfigError(f"cannot resolve {ref}: {exc}") from exc

        return resolve

    async def _load_state(
        self, connector: Connector[Any], integration: str, state_key: str
    ) -> dict[str, Any]:
        async with self.queue.pool.connection() as conn:
            cur = await conn.execute(
                self._sql["connector_state_get"],
                {"integration": integration, "job_type": state_key},
            )
            row = await cur.fetchone()
        if row is None:
            return {}
        stored, version = row
        return upgrade(stored, version, connector.state_version, connector.state_upgrades, "state")

    async def _commit(
        self,
        connector: Connector[Any],
        integration: str,
        state_key: str,
        buffered: dict[str, list[tuple[str, Record]]],
        state: dict[str, Any],
        fence: tuple[uuid.UUID, int],
        *,
        window_done: tuple[str, int] | None = None,
    ) -> None:
        async with self.queue.pool.connection() as conn, conn.transaction():
            # Lock the job row in share mode: its lease cannot expire under this commit,
            # and a worker whose attempt is over writes nothing.
            cur = await conn.execute(self._job_table, fence)
            if await cur.fetchone() is None:
                raise _LeaseLost(
                    f"job {fence[0]} attempt {fence[1]} lost its lease; nothing was written"
                )
            for stream, records in buffered.items():
                await self.destination.write(conn, integration, stream, records)
            await conn.execute(
                self._sql["connector_state_put"],
                {
                    "integration": integration,
                    "job_type": state_key,
                    "state": json.dumps(state),
                    "state_version": connector.state_version,
                },
            )
            if window_done is not None:
                await conn.execute(
                    self._sql["connector_backfill_window_done"],
                    {"id": uuid.UUID(window_done[0]), "index": window_done[1]},
                )


def _validate_config(connector: Connector[Any], doc: dict[str, Any]) -> BaseModel:
    try:
        return connector.config_model.model_validate(doc)
    except ValidationError as exc:
        # Field and reason only: pydantic's text repeats the input, which may be a secret
        # pasted where its reference belongs, and this message is stored and logged.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(config)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(
            f"config for connector {connector.name!r} is invalid: {problems}"
        ) from None


def _window_of(kind: JobType, payload: dict[str, Any]) -> tuple[Window | None, str]:
    """The backfill window of a payload (None for a sync) and the key its state is kept
    under: a sync's job type, or one key per backfill window so a retried window resumes
    from its own checkpoint."""
    info = payload.get("backfill")
    if kind.kind != "backfill":
        return None, kind.name
    if not info:
        raise ConfigError(f"a {kind.name} backfill job has no window in its payload")
    window = Window(
        start=datetime.fromisoformat(info["start"]),
        end=datetime.fromisoformat(info["end"]),
        index=int(info["index"]),
        total=int(info["total"]),
    )
    return window, f"{kind.name}#{info['id']}:{window.index}"
