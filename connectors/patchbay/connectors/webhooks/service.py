"""The webhook service: endpoints, signed deliveries with a retry schedule, replay.

Guarantee
    At-least-once: ``send_event`` writes the message, one delivery per matching enabled
    endpoint and one ``webhook.deliver`` job per delivery in one transaction (the caller's
    when ``conn=`` is given), so an event is either fully sent or not at all. A delivery is
    attempted until an attempt gets a 2xx answer, its schedule is spent, the endpoint
    answers 410 Gone, or the endpoint is disabled. A worker that dies mid-attempt loses its
    lease and the job runs again: the receiver may see a message twice, always with the
    same ``webhook-id`` to deduplicate on. Every attempt is recorded with its outcome.

State model
    ``webhook_endpoint`` (URL, filter, vault references of the signing secrets, enabled,
    failure streak), ``webhook_message`` (the exact body), ``webhook_delivery`` (state,
    attempts, next attempt), ``webhook_attempt``. The retry schedule lives in the delivery
    row: the handler computes the next delay and raises ``Snooze`` so the one job of a
    delivery waits without spending a queue attempt (the queue's own retries are left for
    crashes and database errors), and a job re-run early (lease expiry) snoozes again
    until the recorded ``next_attempt_at``. One job per delivery, rather than one job per
    attempt, keeps the job table at one row per delivery and needs no deduplication.

How it fails
    Receiver failures are recorded and retried per the schedule; an endpoint failing for
    ``disable_after`` is disabled (its pending deliveries cancelled) and reported through
    ``on_endpoint_disabled``. Database errors propagate: the job fails and the queue
    retries it (queue ``retry_limit`` 10, backoff from 5 s). A host resolving to a refused
    address records a ``refused`` attempt and follows the schedule like other failures.
    Signing secrets never leave the vault except to sign: jobs carry delivery ids, rows
    carry references, recorded errors and answers pass through the vault's redactor.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from patchbay.queue import Job, JobSpec, QueueClient, QueueNotFound, Snooze, Worker
from patchbay.queue._sql import Statements
from patchbay.secrets import DatabaseUnavailable as VaultUnavailable
from patchbay.secrets import (
    SecretNotFound,
    SecretsError,
    Vault,
    parse_ref,
    validate_tenant,
)

from ._http import AttemptResult, next_delay, post, utc_timestamp
from .errors import (
    EndpointDisabled,
    EndpointNotFound,
    InvalidEndpointUrl,
    InvalidEventType,
    InvalidWebhookOption,
    InvalidWebhookPayload,
    MessageNotFound,
)
from .models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointDisabledHook,
    Message,
    SentMessage,
)
from .network import AddressPolicy, GuardedTransport, Resolver, system_resolver, validate_url
from .settings import WebhookSettings
from .signing import generate_secret, secret_key, signature_header, validate_secret

__all__ = ["Webhooks", "log_endpoint_disabled"]

log = logging.getLogger("patchbay.connectors.webhooks")

Conn = psycopg.AsyncConnection[Any]

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-/]{0,199}")
_MAX_EVENT_FILTERS = 100
_MAX_DESCRIPTION = 1000
_SECRET_NAME = "webhooks/endpoint/{id}"


class _Unset:
    """Marks an argument that was not given (where None means something)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def log_endpoint_disabled(endpoint: Endpoint, reason: str) -> None:
    """The default ``on_endpoint_disabled`` hook: a warning in the log."""
    log.warning(
        "webhook endpoint %s of tenant %s (%s) was disabled: %s",
        endpoint.id,
        endpoint.tenant,
        endpoint.url,
        reason,
    )


def _tenant(tenant: object) -> str:
    try:
        return validate_tenant(tenant)
    except SecretsError as exc:
        raise InvalidWebhookOption(str(exc)) from exc


def _event_type(value: object) -> str:
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise InvalidEventType(
            f"invalid event type {value!r}: use 1-200 characters of letters, digits and "
            "'_ . : - /', starting with a letter, digit or '_'"
        )
    return value


def _event_filter(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
        raise InvalidEventType(
            f"event_types must be a list of event types (or None for all), got {value!r}"
        )
    found: list[str] = []
    for item in value:
        if isinstance(item, str) and item.endswith(".*") and len(item) > 2:
            _event_type(item[:-2])
        else:
            _event_type(item)
        if item not in found:
            found.append(item)
    if not found:
        raise InvalidEventType(
            "event_types is empty, so the endpoint would receive nothing: give at least one "
            "event type, or None to receive every type"
        )
    if len(found) > _MAX_EVENT_FILTERS:
        raise InvalidEventType(f"at most {_MAX_EVENT_FILTERS} event types per endpoint")
    return found


def _description(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_DESCRIPTION or "\x00" in value:
        raise InvalidWebhookOption(
            f"description must be text of at most {_MAX_DESCRIPTION} characters"
        )
    return value


def _uuid(what: str, value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise InvalidWebhookOption(f"{what} must be a UUID, got {value!r}") from exc


def _aware(what: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidWebhookOption(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


def _limit(value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidWebhookOption(f"limit must be an integer from 1 to {maximum}, got {value!r}")
    return value


class Webhooks:
    """Outbound webhooks of many tenants, signed per Standard Webhooks.

    ``Webhooks(client, vault)`` works in the client's schema (the vault must use the same
    one; pass ``QueueClient(redact=vault.redactor)`` so job errors are redacted too). Use
    as ``async with Webhooks(client, vault) as webhooks:``, then ``await
    webhooks.setup()`` once (creates the delivery queue) and ``await webhooks.work()`` in
    the processes that deliver.

    Settings are a :class:`WebhookSettings` or its fields as keywords.
    ``on_endpoint_disabled`` is called when the service disables an endpoint by itself
    (default: :func:`log_endpoint_disabled`). ``resolver`` resolves host names (default:
    the system's; tests pass their own). ``wall_clock`` gives the Unix time put in the
    ``webhook-timestamp`` header (receivers compare it with their own clock, so it is the
    real time even when the client's clock is frozen); ``rand`` draws the jitter.
    """

    def __init__(
        self,
        client: QueueClient,
        vault: Vault,
        *,
        settings: WebhookSettings | None = None,
        on_endpoint_disabled: EndpointDisabledHook | None = None,
        resolver: Resolver | None = None,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise InvalidWebhookOption("give settings= or setting keywords, not both")
        self.settings = settings if settings is not None else WebhookSettings.build(**options)
        if vault.schema != client.schema:
            raise InvalidWebhookOption(
                f"the vault uses schema {vault.schema!r} and the queue client {client.schema!r}; "
                "webhooks need both in one schema"
            )
        self.client = client
        self.vault = vault
        self.sql = Statements(client.schema, package="patchbay.connectors")
        self.policy = AddressPolicy(
            self.settings.allow_private_networks, self.settings.allowed_networks
        )
        self._resolver: Resolver = resolver or system_resolver
        self._on_disabled: EndpointDisabledHook = on_endpoint_disabled or log_endpoint_disabled
        self._wall_clock = wall_clock
        self._rand = rand
        self._http: httpx.AsyncClient | None = None
        self._workers: list[Worker] = []
        self._queue_ready = False

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the HTTP client (the queue client and vault are the caller's to open)."""
        if self._http is None:
            transport = GuardedTransport(
                self.policy,
                resolver=self._resolver,
                max_connections=self.settings.max_connections,
            )
            self._http = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(self.settings.timeout),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": self.settings.user_agent},
            )
        return self

    async def close(self) -> None:
        """Stop this service's workers (their running deliveries finish first), then close
        the HTTP client."""
        for worker in self._workers:
            await worker.stop()
        self._workers.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def setup(self) -> None:
        """Create the delivery queue if it does not exist (idempotent; sends and
        :meth:`work` call it on first use): fair between tenants; its own retries (10,
        backoff from 5 s to 10 min) cover only crashes and database errors, the retry
        schedule is the service's."""
        if self._queue_ready:
            return
        try:
            await self.client.get_queue(self.settings.queue)
        except QueueNotFound:
            await self.client.create_queue(
                self.settings.queue,
                fair=True,
                retry_limit=10,
                retry_delay=5.0,
                retry_backoff=True,
                retry_delay_max=600.0,
                expire_in=max(120.0, 4 * self.settings.timeout),
            )
        self._queue_ready = True

    async def work(
        self, *, concurrency: int = 20, poll_interval: float = 1.0, batch_size: int | None = None
    ) -> Worker:
        """Start delivering: a worker of the delivery queue running :meth:`deliver`, up to
        ``concurrency`` attempts at once. Calls :meth:`setup` first."""
        await self.open()
        await self.setup()
        worker = await self.client.work(
            self.settings.queue,
            self.deliver,
            concurrency=concurrency,
            poll_interval=poll_interval,
            batch_size=batch_size,
        )
        self._workers.append(worker)
        return worker

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: Conn | None) -> AsyncIterator[Conn]:
        """A transaction of our own, or a savepoint in the caller's (the caller keeps the
        decision to commit; a failure inside rolls back only what this call did)."""
        if conn is None:
            async with self.client.pool.connection() as own, own.transaction():
                yield own
            return
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if not conn.autocommit and idle:
            # psycopg commits a transaction() block begun on an idle connection; opening
            # the caller's transaction first makes the block a savepoint in it.
            await conn.execute(b"select 1")
        async with conn.transaction():
            yield conn

    async def _one(self, statement: str, params: dict[str, Any], conn: Conn | None = None) -> Any:
        if conn is None:
            async with self.client.pool.connection() as own:
                return await self._one(statement, params, own)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(self.sql[statement], params)
        return await cur.fetchone()

    async def _all(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.client.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql[statement], params)
            return list(await cur.fetchall())

    def _now(self) -> datetime | None:
        return self.client.clock.now()

    async def _check_url(self, url: object) -> str:
        parsed = validate_url(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            await self.policy.resolve(host, port, self._resolver, self.settings.timeout)
        except InvalidEndpointUrl:
            raise
        except Exception as exc:
            raise InvalidEndpointUrl(f"cannot resolve the host of {url!r}: {exc}") from exc
        return str(url)

    # -- endpoints -----------------------------------------------------------------------

    async def add_endpoint(
        self,
        tenant: str,
        url: str,
        *,
        event_types: Sequence[str] | None = None,
        description: str = "",
        secret: str | None = None,
        conn: Conn | None = None,
    ) -> Endpoint:
        """Add an endpoint of ``tenant``; returns it (its secret: :meth:`reveal_secret`).

        ``event_types`` None receives every event; otherwise exact types or ``prefix.*``.
        ``secret`` (default: generated) is a ``whsec_`` secret, stored in the vault. The
        URL must be http(s), and its host must resolve to allowed addresses only
        (AddressNotAllowed otherwise). With ``conn=``, it joins the caller's
        transaction."""
        tenant = _tenant(tenant)
        checked_url = await self._check_url(url)
        types = _event_filter(event_types)
        text = _description(description)
        value = generate_secret() if secret is None else validate_secret(secret)
        endpoint_id = uuid.uuid4()
        async with self._transaction(conn) as c:
            stored = await self.vault.put(
                tenant, _SECRET_NAME.format(id=endpoint_id), value, conn=c
            )
            row = await self._one(
                "webhook_endpoint_insert",
                {
                    "id": endpoint_id,
                    "tenant": tenant,
                    "url": checked_url,
                    "description": text,
                    "event_types": types,
                    "secret_ref": str(stored.ref),
                    "now": self._now(),
                },
                c,
            )
        return Endpoint.from_row(row)

    async def get_endpoint(self, endpoint_id: uuid.UUID | str) -> Endpoint:
        """One endpoint; raises EndpointNotFound."""
        eid = _uuid("endpoint id", endpoint_id)
        row = await self._one("webhook_endpoint_get", {"id": eid})
        if row is None:
            raise EndpointNotFound(f"webhook endpoint {eid} not found")
        return Endpoint.from_row(row)

    async def list_endpoints(
        self, tenant: str | None = None, *, enabled: bool | None = None, limit: int = 1000
    ) -> list[Endpoint]:
        """Endpoints (of one tenant, or all), by tenant and creation; ``enabled`` filters."""
        params = {
            "tenant": None if tenant is None else _tenant(tenant),
            "enabled": enabled,
            "limit": _limit(limit, 100_000),
        }
        return [Endpoint.from_row(r) for r in await self._all("webhook_endpoint_list", params)]

    async def update_endpoint(
        self,
        endpoint_id: uuid.UUID | str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | _Unset | None = UNSET,
        description: str | None = None,
    ) -> Endpoint:
        """Change an endpoint's URL, event filter (None: every type) or description;
        arguments not given keep their value. Raises EndpointNotFound."""
        eid = _uuid("endpoint id", endpoint_id)
        params = {
            "id": eid,
            "url": None if url is None else await self._check_url(url),
            "set_event_types": not isinstance(event_types, _Unset),
            "event_types": None if isinstance(event_types, _Unset) else _event_filter(event_types),
            "description": None if description is None else _description(description),
            "now": self._now(),
        }
        row = await self._one("webhook_endpoint_update", params)
        if row is None:
            raise EndpointNotFound(f"webhook endpoint {eid} not found")
        return Endpoint.from_row(row)

    async def disable_endpoint(
        self, endpoint_id: uuid.UUID | str, reason: str = "disabled by an operator"
    ) -> Endpoint:
        """Disable an endpoint: nothing more is sent to it, and its pending deliveries are
        cancelled (replay them after enabling it). Disabling a disabled endpoint changes
        nothing. Raises EndpointNotFound."""
        eid = _uuid("endpoint id", endpoint_id)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise InvalidWebhookOption("reason must be text of 1 to 1000 characters")
        row = await self._one(
            "webhook_endpoint_disable", {"id": eid, "reason": reason, "now": self._now()}
        )
        if row is None:
            return await self.get_endpoint(eid)
        log.info("webhook endpoint %s disabled: %s", eid, reason)
        return Endpoint.from_row(row)

    async def enable_endpoint(self, endpoint_id: uuid.UUID | str) -> Endpoint:
        """Enable an endpoint again (its failure streak starts over). Deliveries cancelled
        while it was disabled are not resent: replay them. Raises EndpointNotFound."""
        eid = _uuid("endpoint id", endpoint_id)
        row = await self._one("webhook_endpoint_enable", {"id": eid, "now": self._now()})
        if row is None:
            raise EndpointNotFound(f"webhook endpoint {eid} not found")
        return Endpoint.from_row(row)

    async def delete_endpoint(self, endpoint_id: uuid.UUID | str) -> None:
        """Delete an endpoint, its deliveries and attempts, and its signing secrets in the
        vault. Raises EndpointNotFound."""
        eid = _uuid("endpoint id", endpoint_id)
        async with self._transaction(None) as c:
            row = await self._one("webhook_endpoint_delete", {"id": eid}, c)
            if row is None:
                raise EndpointNotFound(f"webhook endpoint {eid} not found")
            with contextlib.suppress(SecretNotFound):
                await self.vault.delete(row["tenant"], _SECRET_NAME.format(id=eid), conn=c)

    async def reveal_secret(self, endpoint_id: uuid.UUID | str) -> str:
        """The endpoint's current signing secret, for its receiver to verify with."""
        endpoint = await self.get_endpoint(endpoint_id)
        return await self.vault.resolve(endpoint.secret_ref, tenant=endpoint.tenant)

    async def rotate_secret(
        self,
        endpoint_id: uuid.UUID | str,
        *,
        secret: str | None = None,
        grace: float | None = None,
    ) -> Endpoint:
        """Give an endpoint a new signing secret (default: generated). For ``grace``
        seconds (default ``secret_grace``) deliveries carry signatures by both the new and
        the previous secret, so the receiver can switch at its pace; the secret before the
        previous one is deleted from the vault."""
        eid = _uuid("endpoint id", endpoint_id)
        value = generate_secret() if secret is None else validate_secret(secret)
        grace_s = self.settings.secret_grace if grace is None else grace
        if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or grace_s < 0:
            raise InvalidWebhookOption(f"grace must be seconds >= 0, got {grace!r}")
        async with self._transaction(None) as c:
            current = await self._one("webhook_endpoint_get_for_update", {"id": eid}, c)
            if current is None:
                raise EndpointNotFound(f"webhook endpoint {eid} not found")
            tenant = current["tenant"]
            name = _SECRET_NAME.format(id=eid)
            stored = await self.vault.put(tenant, name, value, conn=c)
            row = await self._one(
                "webhook_endpoint_rotate_secret",
                {
                    "id": eid,
                    "secret_ref": str(stored.ref),
                    "grace_s": float(grace_s),
                    "now": self._now(),
                },
                c,
            )
            replaced = row["replaced_secret_ref"]
            if replaced is not None:
                version = parse_ref(replaced).version
                if version is not None:
                    with contextlib.suppress(SecretNotFound):
                        await self.vault.delete(tenant, name, version, conn=c)
        return Endpoint.from_row(row)

    # -- sending -------------------------------------------------------------------------

    def _body(self, event_type: str, payload: Any, created_at: datetime) -> str:
        try:
            body = json.dumps(
                {"type": event_type, "timestamp": utc_timestamp(created_at), "data": payload},
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            )
            size = len(body.encode("utf-8"))
        except (TypeError, ValueError) as exc:
            raise InvalidWebhookPayload(f"the payload is not JSON-serialisable: {exc}") from exc
        if size > self.settings.max_payload_bytes:
            raise InvalidWebhookPayload(
                f"the encoded message is {size} bytes, over max_payload_bytes "
                f"({self.settings.max_payload_bytes}); send large data by reference"
            )
        return body

    async def _enqueue(self, conn: Conn, tenant: str, ids: list[uuid.UUID]) -> None:
        if not ids:
            return
        await self.setup()
        first_delay = self.settings.retry_schedule[0]
        jobs = [JobSpec(data={"delivery_id": str(i)}, id=i) for i in ids]
        if first_delay > 0:
            await self.client.send_many(
                self.settings.queue, jobs, conn=conn, fairness_key=tenant, start_after=first_delay
            )
        else:
            await self.client.send_many(self.settings.queue, jobs, conn=conn, fairness_key=tenant)

    async def send_event(
        self,
        tenant: str,
        event_type: str,
        payload: Any,
        *,
        conn: Conn | None = None,
        message_id: uuid.UUID | str | None = None,
    ) -> SentMessage:
        """Record a message and queue one delivery per enabled endpoint of ``tenant``
        whose filter takes ``event_type``.

        With ``conn=``, everything joins that connection's transaction: if the caller
        rolls back, there is no message and no job. ``message_id`` makes the send
        idempotent: sending an id that exists sends nothing again (``created`` false).
        The body sent is ``{"type", "timestamp", "data": payload}``."""
        tenant = _tenant(tenant)
        _event_type(event_type)
        mid = uuid.uuid4() if message_id is None else _uuid("message_id", message_id)
        created_at = self._now() or datetime.now(UTC)
        body = self._body(event_type, payload, created_at)
        async with self._transaction(conn) as c:
            cur = await c.execute(
                self.sql["webhook_message_insert_with_deliveries"],
                {
                    "id": mid,
                    "tenant": tenant,
                    "event_type": event_type,
                    "body": body,
                    "created_at": created_at,
                },
            )
            row = await cur.fetchone()
            if row is None or not row[0]:
                return SentMessage(mid, (), created=False)
            ids: list[uuid.UUID] = list(row[1])
            await self._enqueue(c, tenant, ids)
        return SentMessage(mid, tuple(ids))

    async def _insert_deliveries(
        self, conn: Conn, message_id: uuid.UUID, endpoint_id: uuid.UUID | None, *, replay: bool
    ) -> list[uuid.UUID]:
        cur = await conn.execute(
            self.sql["webhook_delivery_insert_for_message"],
            {
                "message_id": message_id,
                "endpoint_id": endpoint_id,
                "replay": replay,
                "now": self._now(),
            },
        )
        return [r[0] for r in await cur.fetchall()]

    # -- messages and replay ---------------------------------------------------------------

    async def purge(self, before: datetime, *, batch_size: int = 1000) -> int:
        """Delete the messages created before ``before``, with their deliveries and
        attempts (retention; nothing is kept in the background). Commits per batch;
        returns how many messages were deleted. Pending deliveries of those messages are
        dropped too."""
        params = {"before": _aware("before", before), "limit": _limit(batch_size, 100_000)}
        total = 0
        while True:
            async with self.client.pool.connection() as conn:
                cur = await conn.execute(self.sql["webhook_message_delete_before"], params)
            total += max(cur.rowcount, 0)
            if cur.rowcount < batch_size:
                return total

    async def get_message(self, message_id: uuid.UUID | str) -> Message:
        """One message; raises MessageNotFound."""
        mid = _uuid("message id", message_id)
        row = await self._one("webhook_message_get", {"id": mid})
        if row is None:
            raise MessageNotFound(f"webhook message {mid} not found")
        return Message.from_row(row)

    async def list_messages(
        self,
        tenant: str | None = None,
        *,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Message]:
        """Messages newest first, of one tenant or all, created in ``[since, until)``."""
        params = {
            "tenant": None if tenant is None else _tenant(tenant),
            "event_type": None if event_type is None else _event_type(event_type),
            "since": None if since is None else _aware("since", since),
            "until": None if until is None else _aware("until", until),
            "limit": _limit(limit, 100_000),
        }
        return [Message.from_row(r) for r in await self._all("webhook_message_list", params)]

    async def deliveries(self, message_id: uuid.UUID | str) -> list[Delivery]:
        """A message's deliveries (one per endpoint, plus replays), oldest first; raises
        MessageNotFound."""
        mid = _uuid("message id", message_id)
        rows = await self._all("webhook_delivery_list_message", {"message_id": mid})
        if not rows:
            await self.get_message(mid)
        return [Delivery.from_row(r) for r in rows]

    async def get_delivery(self, delivery_id: uuid.UUID | str) -> Delivery:
        """One delivery; raises MessageNotFound when there is none of that id."""
        did = _uuid("delivery id", delivery_id)
        row = await self._one("webhook_delivery_get", {"id": did})
        if row is None:
            raise MessageNotFound(f"webhook delivery {did} not found")
        return Delivery.from_row(row)

    async def attempts(self, message_id: uuid.UUID | str, *, limit: int = 1000) -> list[Attempt]:
        """Every attempt to deliver a message, oldest first; raises MessageNotFound."""
        mid = _uuid("message id", message_id)
        rows = await self._all(
            "webhook_attempt_list_message", {"message_id": mid, "limit": _limit(limit, 100_000)}
        )
        if not rows:
            await self.get_message(mid)
        return [Attempt.from_row(r) for r in rows]

    async def replay_message(
        self,
        message_id: uuid.UUID | str,
        *,
        endpoint_id: uuid.UUID | str | None = None,
        conn: Conn | None = None,
    ) -> list[uuid.UUID]:
        """Deliver a message again, as a new delivery with a fresh schedule and the same
        ``webhook-id``: to every enabled endpoint of its tenant whose filter takes it, or
        only to ``endpoint_id``. Returns the new deliveries' ids. Raises MessageNotFound,
        EndpointNotFound, or EndpointDisabled for a disabled ``endpoint_id``."""
        message = await self.get_message(message_id)
        eid = None
        if endpoint_id is not None:
            endpoint = await self.get_endpoint(endpoint_id)
            if endpoint.tenant != message.tenant:
                raise EndpointNotFound(
                    f"webhook endpoint {endpoint.id} is not an endpoint of tenant "
                    f"{message.tenant!r}, whose message this is"
                )
            if not endpoint.enabled:
                raise EndpointDisabled(
                    f"webhook endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); "
                    "enable it before replaying to it"
                )
            eid = endpoint.id
        async with self._transaction(conn) as c:
            ids = await self._insert_deliveries(c, message.id, eid, replay=True)
            await self._enqueue(c, message.tenant, ids)
        return ids

    async def replay(
        self,
        tenant: str,
        since: datetime,
        until: datetime | None = None,
        *,
        endpoint_id: uuid.UUID | str | None = None,
        failed_only: bool = False,
        batch_size: int = 500,
    ) -> int:
        """Deliver again every message of ``tenant`` created in ``[since, until)``, oldest
        first, to the enabled endpoints whose filter takes it (or only ``endpoint_id``).
        With ``failed_only``, only where the endpoint has no succeeded or pending delivery
        of the message (recovering after an outage). Commits per batch of
        ``batch_size`` messages; returns the number of deliveries queued."""
        tenant = _tenant(tenant)
        params: dict[str, Any] = {
            "tenant": tenant,
            "since": _aware("since", since),
            "until": None if until is None else _aware("until", until),
            "endpoint_id": None,
            "failed_only": bool(failed_only),
            "limit": _limit(batch_size, 10_000),
            "after_created_at": None,
            "after_id": None,
        }
        if endpoint_id is not None:
            endpoint = await self.get_endpoint(endpoint_id)
            if endpoint.tenant != tenant:
                raise EndpointNotFound(
                    f"webhook endpoint {endpoint.id} is not an endpoint of tenant {tenant!r}"
                )
            if not endpoint.enabled:
                raise EndpointDisabled(
                    f"webhook endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); "
                    "enable it before replaying to it"
                )
            params["endpoint_id"] = endpoint.id
        total = 0
        while True:
            params["now"] = self._now()
            async with self._transaction(None) as c:
                row = await self._one("webhook_delivery_insert_replay_range", params, c)
                ids: list[uuid.UUID] = list(row["ids"])
                await self._enqueue(c, tenant, ids)
            total += len(ids)
            if row["scanned"] < params["limit"]:
                return total
            params["after_created_at"] = row["last_created_at"]
            params["after_id"] = row["last_id"]

    # -- delivering ----------------------------------------------------------------------

    async def deliver(self, job: Job) -> dict[str, Any]:
        """The handler of the delivery queue: one attempt of the job's delivery.

        Returns when the delivery is settled (succeeded, failed, cancelled); raises
        ``Snooze`` until the next attempt of the schedule is due."""
        data = job.data if isinstance(job.data, dict) else {}
        delivery_id = _uuid("delivery_id", data.get("delivery_id"))
        row = await self._one("webhook_delivery_load", {"id": delivery_id, "now": self._now()})
        if row is None:
            return {"skipped": "the delivery no longer exists"}
        if row["state"] != DeliveryState.PENDING:
            return {"skipped": f"the delivery is {row['state']}"}
        if not row["enabled"]:
            await self._one(
                "webhook_delivery_cancel",
                {"id": delivery_id, "reason": "endpoint disabled", "now": self._now()},
            )
            return {"skipped": "the endpoint is disabled"}
        due: datetime | None = row["next_attempt_at"]
        if due is not None and due > row["now"]:
            # Run early (a lost lease re-ran the job): keep to the recorded schedule.
            raise Snooze((due - row["now"]).total_seconds(), "next attempt not due yet")
        attempt = int(row["attempts"]) + 1
        result = await self._attempt(row)
        return await self._record(row, attempt, result)

    async def _signing_keys(self, row: dict[str, Any]) -> list[bytes]:
        tenant_secrets = self.vault.for_tenant(row["tenant"])
        keys = [secret_key(await tenant_secrets.resolve(row["secret_ref"]))]
        if row["previous_secret_ref"] is not None:
            with contextlib.suppress(SecretNotFound):
                keys.append(secret_key(await tenant_secrets.resolve(row["previous_secret_ref"])))
        return keys

    async def _attempt(self, row: dict[str, Any]) -> AttemptResult:
        await self.open()
        assert self._http is not None
        message_id = str(row["message_id"])
        body: str = row["body"]
        try:
            keys = await self._signing_keys(row)
        except VaultUnavailable:
            raise
        except SecretsError as exc:
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"the signing secret is unavailable: {exc}"
            )
        timestamp = int(self._wall_clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, message_id, timestamp, body),
        }
        return await post(self._http, row["url"], body.encode("utf-8"), headers, self.settings)

    async def _record(
        self, row: dict[str, Any], attempt: int, result: AttemptResult
    ) -> dict[str, Any]:
        outcome = result.outcome
        delay: float | None = None
        if outcome is AttemptOutcome.SUCCEEDED:
            state = DeliveryState.SUCCEEDED
        elif outcome is AttemptOutcome.GONE:
            state = DeliveryState.FAILED
        else:
            delay = next_delay(self.settings, attempt, result, self._rand())
            state = DeliveryState.FAILED if delay is None else DeliveryState.PENDING
        redact = self.vault.redactor
        headers = result.headers
        if headers is not None:
            headers = {k: redact(v) for k, v in headers.items()}
        params = {
            "delivery_id": row["id"],
            "message_id": row["message_id"],
            "endpoint_id": row["endpoint_id"],
            "attempt": attempt,
            "url": row["url"],
            "outcome": outcome.value,
            "status": result.status,
            "duration_ms": result.duration_ms,
            "response_headers": None if headers is None else Jsonb(headers),
            "response_body": None if result.body is None else redact(result.body),
            "body_truncated": result.truncated,
            "error": None if result.error is None else redact(result.error),
            "delay_s": delay,
            "state": state.value,
            "failed": outcome is not AttemptOutcome.SUCCEEDED,
            "gone": outcome is AttemptOutcome.GONE,
            "gone_reason": f"the receiver answered 410 Gone to delivery {row['id']}",
            "disable_after_s": self.settings.disable_after,
            "now": self._now(),
        }
        found = await self._one("webhook_delivery_record_attempt", params)
        log.debug(
            "webhook delivery %s attempt %d to %s: %s %s",
            row["id"],
            attempt,
            row["url"],
            outcome.value,
            result.status or result.error,
        )
        if found is not None and found["disabled_now"]:
            reason = str(found["disabled_reason"])
            if state is DeliveryState.PENDING:
                # This attempt ended the endpoint's patience: no retry of it either.
                await self._one(
                    "webhook_delivery_cancel",
                    {"id": row["id"], "reason": f"endpoint disabled: {reason}", "now": self._now()},
                )
                state = DeliveryState.CANCELLED
            await self._report_disabled(row["endpoint_id"], reason)
        if state is DeliveryState.PENDING:
            assert delay is not None
            raise Snooze(delay, f"attempt {attempt} {outcome.value}; next in {delay:.1f}s")
        return {"delivery": state.value, "attempts": attempt, "status": result.status}

    async def _report_disabled(self, endpoint_id: uuid.UUID, reason: str) -> None:
        try:
            endpoint = await self.get_endpoint(endpoint_id)
            outcome = self._on_disabled(endpoint, reason)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("the on_endpoint_disabled hook failed for endpoint %s", endpoint_id)
