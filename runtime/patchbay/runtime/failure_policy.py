"""The failure policy: when an integration "needs attention", and who is told.

Guarantee
    Every final failure of an integration's job is counted in the transaction that decides
    what it means. After ``attention_after`` consecutive final failures (default 3), or at
    once for an error that needs a person (``AuthError``, ``ConfigError``, anything with
    ``retryable = False``), the integration becomes ``needs_attention`` (the scheduler
    skips it: its schedule is paused) and an attention incident opens. Before that, the
    first final failure opens a *warning* that resolves itself on the next success. An
    integration has at most one open incident (one per episode, not one per failure): a
    partial unique index enforces it.

Provider incidents
    When ``provider_threshold`` integrations of different tenants on one connector fail the
    same way (same error signature) within ``provider_window`` seconds, one provider-level
    incident opens and the tenants' incidents link to it: people get one alert, not a flood.

Notifications
    Opening, escalating and resolving an incident each enqueue one notification job in the
    same transaction (queue ``patchbay.notify``), with an id derived from the incident and
    the transition, so a transition is never notified twice. Incidents linked to a provider
    incident are not notified on their own.

State model: ``integration.status`` (active | paused | needs_attention | disabled),
``integration.consecutive_failures``, ``incident`` rows (open | resolved; warning |
attention). How it fails: a database error in a hook propagates to the job, which the
queue then retries; the counters move only when their transaction commits.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from patchbay.connectors import RunInfo, RunStats
from patchbay.queue import Clock, InvalidOption, QueueClient, Statements

from .audit import worker_identity

__all__ = [
    "NOTIFY_QUEUE",
    "FailurePolicy",
    "FailureTracker",
    "error_signature",
]

NOTIFY_QUEUE = "patchbay.notify"
_NOTIFY_NAMESPACE = uuid.UUID("5b0b54c3-4f0b-4e8a-9a55-2b1d2c0e7a11")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """When failures become a warning, an attention incident, a provider incident.

    - ``warning_after``: consecutive final failures that open a warning (default 1; 0 off).
    - ``attention_after``: consecutive final failures that need a person (default 3).
    - ``immediate``: error type names that need a person at once (default AuthError and
      ConfigError; any exception with ``retryable = False`` counts too).
    - ``provider_threshold``: integrations of different tenants failing the same way that
      make a provider incident (default 3); ``provider_window``: within how many seconds
      (default 900).
    """

    warning_after: int = 1
    attention_after: int = 3
    immediate: tuple[str, ...] = ("AuthError", "ConfigError")
    provider_threshold: int = 3
    provider_window: float = 900.0

    def __post_init__(self) -> None:
        if self.attention_after < 1 or self.warning_after < 0:
            raise InvalidOption("attention_after must be >= 1 and warning_after >= 0")
        if self.provider_threshold < 2 or self.provider_window <= 0:
            raise InvalidOption("provider_threshold must be >= 2 and provider_window > 0")

    def merged(self, overrides: Mapping[str, Any] | None) -> FailurePolicy:
        """This policy with ``overrides`` (e.g. an integration's) applied; unknown keys
        raise InvalidOption."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise InvalidOption(f"unknown failure policy setting(s): {', '.join(sorted(unknown))}")
        values = dict(overrides)
        if "immediate" in values:
            values["immediate"] = tuple(values["immediate"])
        return replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        doc = asdict(self)
        doc["immediate"] = list(self.immediate)
        return doc


def error_signature(error: BaseException) -> str:
    """What "failing the same way" means: the error's type and its message with numbers
    blanked (ids, timestamps and counts differ between tenants; the failure does not)."""
    status = getattr(error, "status", None)
    message = _DIGITS.sub("#", str(error))[:200]
    return f"{type(error).__name__}:{status if status is not None else ''}:{message}"


def _needs_person(error: BaseException, policy: FailurePolicy) -> bool:
    return type(error).__name__ in policy.immediate or getattr(error, "retryable", True) is False


class FailureTracker:
    """Implements the connector executor's hooks with the failure policy; also resolves
    incidents when an integration is resumed."""

    def __init__(
        self,
        queue: QueueClient,
        *,
        policy: FailurePolicy | None = None,
        connector_policies: Mapping[str, FailurePolicy] | None = None,
        redact: Callable[[str], str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.queue = queue
        self.policy = policy or FailurePolicy()
        self.connector_policies = dict(connector_policies or {})
        self.redact = redact or (lambda text: text)
        self.clock = clock or queue.clock
        self._sql = Statements(queue.schema, package="patchbay.runtime")

    async def ensure_queue(self) -> None:
        """Create the notification queue if missing."""
        try:
            await self.queue.get_queue(NOTIFY_QUEUE)
        except Exception:
            await self.queue.create_queue(NOTIFY_QUEUE, retry_limit=10, retry_delay=5.0)

    # -- executor hooks --------------------------------------------------------------------

    async def on_success(self, run: RunInfo, stats: RunStats) -> None:
        """Reset the counters, auto-resolve a warning, record a ``synced`` event (its
        counts, the job, and the ``worker`` that ran it; ``resolved`` after it when a
        warning resolved)."""
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["integration_record_success"],
                {
                    "integration": run.integration,
                    "now": self.clock.now(),
                    "data": json.dumps(
                        {
                            "job_type": run.job_type,
                            "job_id": str(run.job.id),
                            "attempt": run.job.attempt,
                            "worker": worker_identity(),
                            **stats.to_json(),
                        }
                    ),
                },
            )
            row = await cur.fetchone()
            if row and row["resolved_incident"]:
                await self._notify(conn, row["resolved_incident"], "resolved", run, None)

    async def on_failure(self, run: RunInfo, error: BaseException, final: bool) -> None:
        """Count a final failure and apply the policy (see the module docstring)."""
        if not final:
            return
        message = self.redact(str(error))
        error_doc = {
            "type": type(error).__name__,
            "message": message,
            "job_id": str(run.job.id),
            "job_type": run.job_type,
        }
        signature = error_signature(error)
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            now = self.clock.now()
            await cur.execute(
                self._sql["integration_record_failure"],
                {"integration": run.integration, "error": json.dumps(error_doc), "now": now},
            )
            row = await cur.fetchone()
            if row is None:
                return  # not a registered integration (a bare executor run)
            policy = self.connector_policies.get(row["connector"], self.policy).merged(
                row["failure_policy"]
            )
            count = row["consecutive_failures"]
            attention = _needs_person(error, policy) or count >= policy.attention_after
            if not attention and (policy.warning_after == 0 or count < policy.warning_after):
                return
            level = "attention" if attention else "warning"
            title = (
                f"integration {run.integration} of tenant {run.tenant} needs attention: "
                f"{type(error).__name__}: {message}"
                if attention
                else f"integration {run.integration} of tenant {run.tenant} is failing: "
                f"{type(error).__name__}: {message}"
            )
            await cur.execute(
                self._sql["incident_open_for_integration"],
                {
                    "id": uuid.uuid4(),
                    "level": level,
                    "tenant": run.tenant,
                    "integration": run.integration,
                    "connector": row["connector"],
                    "signature": signature,
                    "title": title[:500],
                    "error": json.dumps(error_doc),
                    "job": run.job.id,
                    "now": now,
                },
            )
            incident = await cur.fetchone()
            assert incident is not None
            if attention and row["status"] == "active":
                await cur.execute(
                    self._sql["integration_set_status"],
                    {
                        "integration": run.integration,
                        "status": "needs_attention",
                        "from": ["active"],
                        "reset": False,
                        "kind": "needs_attention",
                        "data": json.dumps({"incident": str(incident["id"]), **error_doc}),
                        "now": now,
                    },
                )
            parent = incident["parent_id"]
            if attention:
                parent = (
                    await self._provider_incident(
                        conn, row["connector"], signature, error_doc, policy, now
                    )
                    or parent
                )
            if parent is None and (incident["opened"] or incident["escalated"]):
                transition = "opened" if incident["opened"] else "escalated"
                await self._notify(conn, incident["id"], transition, run, error_doc)

    async def _provider_incident(
        self,
        conn: psycopg.AsyncConnection[Any],
        connector: str,
        signature: str,
        error_doc: dict[str, Any],
        policy: FailurePolicy,
        now: Any,
    ) -> uuid.UUID | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            self._sql["incident_similar_open"],
            {
                "connector": connector,
                "signature": signature,
                "window_s": policy.provider_window,
                "now": now,
            },
        )
        similar = await cur.fetchall()
        if len({r["tenant_id"] for r in similar}) < policy.provider_threshold:
            return None
        await cur.execute(
            self._sql["incident_open_provider"],
            {
                "id": uuid.uuid4(),
                "connector": connector,
                "subject": f"{connector}:{signature}"[:500],
                "title": f"connector {connector} is failing for {len(similar)} integrations: "
                f"{error_doc['type']}: {error_doc['message']}"[:500],
                "error": json.dumps(error_doc),
                "count": len(similar),
                "now": now,
            },
        )
        provider = await cur.fetchone()
        assert provider is not None
        await conn.execute(
            self._sql["incident_link_children"],
            {"parent": provider["id"], "ids": [r["id"] for r in similar]},
        )
        if provider["opened"]:
            await self._notify(conn, provider["id"], "opened", None, error_doc)
        parent: uuid.UUID = provider["id"]
        return parent

    # -- people's actions ----------------------------------------------------------------------

    async def resume(self, integration: str, *, by: str = "operator") -> bool:
        """Return an integration to ``active``: counters reset, its incident resolved (and
        its provider incident, once no child is open). Returns whether it changed."""
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["integration_set_status"],
                {
                    "integration": integration,
                    "status": "active",
                    "from": ["paused", "needs_attention"],
                    "reset": True,
                    "kind": "resumed",
                    "data": json.dumps({"by": by}),
                    "now": self.clock.now(),
                },
            )
            changed = await cur.fetchone() is not None
            await self.resolve_incidents(conn, integration, by=by)
        return changed

    async def on_resume(self, ctx: Any) -> None:
        """The registry's resume hook: resolves the integration's incidents inside the
        resume's own transaction (``ctx.connection``), so both commit together."""
        await self.resolve_incidents(ctx.connection, ctx.integration.id, by=ctx.actor or "operator")

    async def resolve_incidents(
        self, conn: psycopg.AsyncConnection[Any], integration: str, *, by: str
    ) -> int:
        """Resolve the integration's open incident on ``conn`` (the caller's transaction),
        record a ``resolved`` event, notify it, and resolve its provider incident once no
        child is open; returns how many incidents were resolved."""
        cur = conn.cursor(row_factory=dict_row)
        now = self.clock.now()
        await cur.execute(
            self._sql["incident_resolve_for_integration"],
            {"integration": integration, "by": by, "now": now},
        )
        resolved = await cur.fetchall()
        for incident in resolved:
            await conn.execute(
                self._sql["integration_event_insert_for"],
                {
                    "integration": integration,
                    "kind": "resolved",
                    "data": json.dumps({"incident": str(incident["id"]), "by": by}),
                    "now": now,
                },
            )
            await self._notify(conn, incident["id"], "resolved", None, None)
            if incident["parent_id"] is not None:
                await cur.execute(
                    self._sql["incident_resolve_parent_if_done"],
                    {"parent": incident["parent_id"], "now": now},
                )
                if await cur.fetchone() is not None:
                    await self._notify(conn, incident["parent_id"], "resolved", None, None)
        return len(resolved)

    async def open_subject_incident(
        self,
        scope: str,
        subject: str,
        title: str,
        *,
        tenant: str | None = None,
        connector: str | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> uuid.UUID:
        """Open (or update) an incident about something that is not an integration: a
        disabled webhook endpoint (scope ``endpoint``), an alert (scope ``alert``)."""
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["incident_open_subject"],
                {
                    "id": uuid.uuid4(),
                    "scope": scope,
                    "tenant": tenant,
                    "connector": connector,
                    "subject": subject,
                    "title": self.redact(title),
                    "error": json.dumps(dict(error or {})),
                    "now": self.clock.now(),
                },
            )
            row = await cur.fetchone()
            assert row is not None
            if row["opened"]:
                await self._notify(conn, row["id"], "opened", None, dict(error or {}))
            incident: uuid.UUID = row["id"]
            return incident

    async def resolve(self, incident_id: uuid.UUID, *, by: str = "operator") -> bool:
        """Resolve one incident (an integration's also returns it to active)."""
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["incident_get"], {"id": incident_id})
            row = await cur.fetchone()
        if row is None or row["status"] != "open":
            return False
        if row["scope"] == "integration" and row["integration_id"]:
            await self.resume(row["integration_id"], by=by)
            return True
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["incident_resolve"],
                {"id": incident_id, "by": by, "now": self.clock.now()},
            )
            if await cur.fetchone() is None:
                return False
            await self._notify(conn, incident_id, "resolved", None, None)
        return True

    async def incidents(
        self,
        *,
        status: str | None = None,
        tenant: str | None = None,
        integration: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Incidents, newest first."""
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["incident_list"],
                {"status": status, "tenant": tenant, "integration": integration, "limit": limit},
            )
            return list(await cur.fetchall())

    async def _notify(
        self,
        conn: psycopg.AsyncConnection[Any],
        incident: uuid.UUID,
        transition: str,
        run: RunInfo | None,
        error: dict[str, Any] | None,
    ) -> None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(self._sql["incident_get"], {"id": incident})
        row = await cur.fetchone()
        assert row is not None
        payload = {
            "incident": str(incident),
            "transition": transition,
            "scope": row["scope"],
            "level": row["level"],
            "title": row["title"],
            "tenant": row["tenant_id"],
            "integration": row["integration_id"],
            "connector": row["connector"],
            "last_error": row["last_error"],
            "failure_count": row["failure_count"],
            "first_failure_at": _iso(row["first_failure_at"]),
            "last_failure_at": _iso(row["last_failure_at"]),
        }
        # The id is a function of (incident, transition): a transition sent twice (a
        # retried hook, two daemons) is one job.
        job_id = uuid.uuid5(_NOTIFY_NAMESPACE, f"{incident}:{transition}:{row['level']}")
        await self.queue.send(NOTIFY_QUEUE, payload, conn=conn, id=job_id)


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
