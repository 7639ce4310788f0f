"""The worker engine: a per-job handler API over batched SQL.

Guarantees
    At-least-once: a fetched job ends completed, retried/failed, or released back to the
    queue; if the process dies, lease expiry (maintenance) re-runs it. Every write is fenced
    by the job's attempt, so a worker that lost its lease never overwrites a newer attempt.

State model
    One fetch loop claims up to the free slots (``concurrency`` minus running handlers) in
    one statement and starts one asyncio task per job. Results go to the completer, which
    writes every result gathered since its last write in one statement per kind (complete,
    fail, release): batches grow with load, and an idle worker writes at once.

How it fails
    Database errors in fetch or completion are logged and retried with capped backoff; the
    results stay buffered meanwhile (the jobs stay active, fenced). A handler that outlives
    its lease is cancelled and its attempt recorded as failed. ``stop()`` stops fetching,
    waits up to the grace period, then cancels what still runs and releases those jobs
    without spending their attempt; if the database is unreachable then, it gives up on the
    unwritten results after ``_FINAL_WRITE_TIMEOUT`` (lease expiry re-runs those jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from ._events import record_transition
from ._payload import encode_payload
from ._progress import ProgressWriter
from .errors import InvalidOption, Snooze
from .models import Job
from .settings import integer, seconds

if TYPE_CHECKING:
    from .client import QueueClient

__all__ = ["Handler", "Worker"]

log = logging.getLogger("patchbay.queue.worker")


class Handler(Protocol):
    """An async function called with each Job: its return value (JSON) is the job's output;
    an exception fails the attempt, which is retried per the job's policy."""

    def __call__(self, job: Job, /) -> Awaitable[Any]: ...


_MAX_BACKOFF = 5.0
# How long stop() keeps retrying to write the last results when the database does not
# answer, before it gives up on them (their jobs then run again after lease expiry): a
# worker stopped during an outage must still exit.
_FINAL_WRITE_TIMEOUT = 10.0
_ERROR_TEXT_LIMIT = 64 * 1024


class _LeaseLost(Exception):
    """Raised into a handler task whose lease ran out."""


def error_document(exc: BaseException, redact: Callable[[str], str] | None) -> str:
    """The JSON stored in ``job.error`` for a failed attempt."""
    message = str(exc)
    trace = "".join(traceback.format_exception(exc))
    if redact is not None:
        message, trace = redact(message), redact(trace)
    doc = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": message[:_ERROR_TEXT_LIMIT],
        "traceback": trace[-_ERROR_TEXT_LIMIT:],
    }
    return encode_payload(doc, limit=4 * _ERROR_TEXT_LIMIT, what="error")


class _Completer:
    """Buffers handler results and writes them in batches."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._done: tuple[list[uuid.UUID], list[int], list[str | None]] = ([], [], [])
        self._failed: tuple[list[uuid.UUID], list[int], list[str], list[bool]] = ([], [], [], [])
        self._released: tuple[list[uuid.UUID], list[int], list[float]] = ([], [], [])
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._writing = 0  # results in the batch being written

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="completer")

    def complete(self, job: Job, output: str | None) -> None:
        ids, attempts, outputs = self._done
        ids.append(job.id)
        attempts.append(job.attempt)
        outputs.append(output)
        self._kick()

    def fail(self, job: Job, error: str, *, final: bool = False) -> None:
        ids, attempts, errors, finals = self._failed
        ids.append(job.id)
        attempts.append(job.attempt)
        errors.append(error)
        finals.append(final)
        self._kick()

    def release(self, job: Job, delay: float = 0.0) -> None:
        ids, attempts, delays = self._released
        ids.append(job.id)
        attempts.append(job.attempt)
        delays.append(delay)
        self._kick()

    def _kick(self) -> None:
        if not self._pending.is_set():
            self._idle.clear()
            self._pending.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._pending.wait()
            self._pending.clear()
            done, failed, released = self._done, self._failed, self._released
            self._done, self._failed, self._released = ([], [], []), ([], [], [], []), ([], [], [])
            self._writing = len(done[0]) + len(failed[0]) + len(released[0])
            while True:
                try:
                    await self._write(done, failed, released)
                    failures = 0
                    break
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    failures += 1
                    delay = min(_MAX_BACKOFF, 0.05 * 2**failures)
                    if failures in (1, 10) or failures % 100 == 0:
                        log.warning("completion write failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                except psycopg.Error:
                    # Not a connection problem: retrying the same batch would fail forever.
                    # The jobs stay active and their leases expire, so they run again.
                    log.exception("completion write failed; the batch's leases will expire")
                    break
            self._writing = 0
            if not self._pending.is_set():
                self._idle.set()
                if self._closing:
                    return

    async def _write(
        self,
        done: tuple[list[uuid.UUID], list[int], list[str | None]],
        failed: tuple[list[uuid.UUID], list[int], list[str], list[bool]],
        released: tuple[list[uuid.UUID], list[int], list[float]],
    ) -> None:
        worker = self._worker
        client = worker.client
        now = client.clock.now()
        # Read before taking a connection: on a miss the flag takes one of its own.
        events = await client._events.enabled(worker.queue)
        async with client.pool.connection() as conn:
            if done[0]:
                cur = await conn.execute(
                    client.sql["job_complete_many"],
                    {"ids": done[0], "attempts": done[1], "outputs": done[2], "now": now},
                )
                worker.completed += cur.rowcount
                worker.stale_writes += len(done[0]) - cur.rowcount
                if events:
                    await worker._record("completed", "completed", done[0], done[1], now, conn)
            if failed[0]:
                cur = await conn.execute(
                    client.sql["job_fail_many"],
                    {
                        "ids": failed[0],
                        "attempts": failed[1],
                        "errors": failed[2],
                        "finals": failed[3],
                        "now": now,
                        "channel": client.channel,
                    },
                )
                worker.failed += cur.rowcount
                worker.stale_writes += len(failed[0]) - cur.rowcount
            if released[0]:
                cur = await conn.execute(
                    client.sql["job_release_many"],
                    {
                        "ids": released[0],
                        "attempts": released[1],
                        "delays": released[2],
                        "now": now,
                    },
                )
                worker.released += cur.rowcount
                if events:
                    attempts = [a - 1 for a in released[1]]
                    await worker._record("released", "queued", released[0], attempts, now, conn)

    async def flush(self) -> None:
        """Wait until every buffered result is written."""
        await self._idle.wait()

    @property
    def unwritten(self) -> int:
        """Results buffered or being written."""
        return self._writing + len(self._done[0]) + len(self._failed[0]) + len(self._released[0])

    async def close(self, give_up_after: float) -> None:
        """Write what is buffered, giving up after ``give_up_after`` seconds (the database
        is unreachable): those jobs stay active until their leases expire, then run again."""
        self._closing = True
        self._kick()
        if self._task is None:
            return
        finished, _ = await asyncio.wait({self._task}, timeout=give_up_after)
        if not finished:
            unwritten = self.unwritten
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            log.warning(
                "stopping with %d job result(s) not written (the database did not answer "
                "for %.0fs); those jobs run again once their leases expire",
                unwritten,
                give_up_after,
            )


class Worker:
    """Runs ``handler(job)`` for the jobs of one queue, up to ``concurrency`` at once.

    Settings: ``concurrency`` (default 10) handler calls at once; ``batch_size`` (default:
    ``concurrency``, at most 1000) jobs claimed per fetch; ``poll_interval`` (default 1 s)
    seconds between fetches when no notification arrives: the fallback if LISTEN is lost,
    and how soon deferred jobs, delayed retries and refilled rate limits are noticed;
    ``shutdown_grace`` (default 30 s) that ``stop()`` waits for running handlers.

    Handlers run in up to ``concurrency`` long-lived slot tasks fed from an in-memory inbox,
    not in a new task per job: a job costs a few microseconds of bookkeeping, and
    ``asyncio.current_task()`` inside a handler is its slot's task for the whole call.

    Counters ``completed``, ``failed``, ``released`` and ``stale_writes`` (results rejected
    because the job's attempt moved on) are for tests and metrics.
    """

    def __init__(
        self,
        client: QueueClient,
        queue: str,
        handler: Handler,
        *,
        concurrency: int,
        batch_size: int | None,
        poll_interval: float,
        shutdown_grace: float,
    ) -> None:
        if not callable(handler):
            raise InvalidOption("handler must be an async callable taking a Job")
        self.client = client
        self.queue = queue
        self.handler = handler
        self.concurrency = integer("concurrency", concurrency, minimum=1, maximum=100_000)
        self.batch_size = integer(
            "batch_size",
            batch_size if batch_size is not None else min(self.concurrency, 1000),
            minimum=1,
            maximum=10_000,
        )
        self.poll_interval = seconds("poll_interval", poll_interval, allow_zero=False)
        self.shutdown_grace = seconds("shutdown_grace", shutdown_grace)
        self.completed = 0
        self.failed = 0
        self.released = 0
        self.stale_writes = 0
        self.snoozed = 0
        self.fetches = 0
        # job id -> (job, slot task running it, monotonic lease deadline)
        self._running: dict[uuid.UUID, tuple[Job, asyncio.Task[None], float]] = {}
        self._inbox: asyncio.Queue[tuple[Job, float]] = asyncio.Queue()
        self._slots: list[asyncio.Task[None]] = []
        self._lease_expired: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._all_idle = asyncio.Event()
        self._all_idle.set()
        self._stopping = False
        self._releasing = False
        self._completer = _Completer(self)
        self._progress = ProgressWriter(client)
        self._loop_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def running(self) -> int:
        """Handler calls in progress."""
        return len(self._running)

    def wake(self) -> None:
        """Fetch now (a runnable job was committed)."""
        self._wake.set()

    async def start(self) -> None:
        """Start fetching."""
        loop = asyncio.get_running_loop()
        self._completer.start()
        self._loop_task = loop.create_task(self._fetch_loop(), name=f"fetch:{self.queue}")
        self._watchdog_task = loop.create_task(self._watchdog(), name=f"lease:{self.queue}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop fetching, let running handlers finish for up to ``grace`` seconds (default
        ``shutdown_grace``), then cancel the rest and put their jobs back in the queue
        without spending an attempt. Returns when every result is written, or when the
        database has not answered for 10 s more (those jobs are then re-run after their
        leases expire, with an attempt spent)."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.shutdown_grace if grace is None else grace
        # Let the fetch loop leave between fetches: cancelled mid-fetch, it would drop the
        # jobs that fetch had just claimed, leaving them active until their lease ran out.
        self._wake.set()
        self._slot_freed.set()
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task}, timeout=_MAX_BACKOFF)
        for task in (self._loop_task, self._watchdog_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._loop_task, self._watchdog_task) if t), return_exceptions=True
        )
        # Fetched but not started: back to the queue at once.
        while not self._inbox.empty():
            job, _ = self._inbox.get_nowait()
            self._completer.release(job)
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_idle.wait(), timeout=grace)
        self._releasing = True
        for slot in self._slots:
            slot.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots.clear()
        await self._completer.close(give_up_after=_FINAL_WRITE_TIMEOUT)
        await self._progress.close()
        self._stopped.set()

    async def drain(self) -> None:
        """Wait until buffered results are written (for tests)."""
        await self._completer.flush()

    async def _fetch_loop(self) -> None:
        client = self.client
        fair = (await client.get_queue(self.queue)).settings.fair
        statement = client.sql["job_fetch_fair" if fair else "job_fetch_available"]
        # Fair fetch resumes the round-robin after the key the previous fetch ended on.
        params: dict[str, Any] = {"queue": self.queue, "after": None}
        failures = 0
        while not self._stopping:
            free = self.concurrency - len(self._running) - self._inbox.qsize()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            want = min(free, self.batch_size)
            params["limit"] = params["max_keys"] = want
            params["now"] = client.clock.now()
            self._wake.clear()
            try:
                async with client.pool.connection() as conn:
                    cur = await conn.execute(statement, params)
                    rows = await cur.fetchall()
                failures = 0
            except psycopg.Error as exc:
                # Connection errors and anything else (a schema being migrated, a dropped
                # table): the worker keeps trying with backoff instead of dying silently.
                failures += 1
                delay = min(_MAX_BACKOFF, 0.05 * 2**failures)
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning(
                        "fetch from %s failed (%s); retrying in %.2fs", self.queue, exc, delay
                    )
                await asyncio.sleep(delay)
                continue
            self.fetches += 1
            if fair:
                params["after"] = rows[0][-1] if rows else None
            if rows and await client._events.enabled(self.queue):
                # Before the handlers run, so 'started' precedes what they lead to.
                ids, attempts = [r[0] for r in rows], [r[2] for r in rows]
                await self._record("started", "active", ids, attempts, params["now"])
            if rows:
                self._start_jobs(rows)
                if len(rows) == want:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def _record(
        self,
        kind: str,
        to_state: str,
        ids: list[uuid.UUID],
        attempts: list[int],
        now: Any,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Job events of transitions this worker made (only for queues with events on:
        the callers check). A start's previous state (queued or retrying) is not known."""
        from_state = None if kind == "started" else "active"
        client = self.client
        await record_transition(
            client.pool,
            client.sql,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            ids=ids,
            attempts=attempts,
            now=now,
            conn=conn,
        )

    def _start_jobs(self, rows: list[tuple[Any, ...]]) -> None:
        now = time.monotonic()
        queue = self.queue
        heartbeat = self._heartbeat
        progress = self._progress.report
        put = self._inbox.put_nowait
        for job_id, data, attempt, priority, retry_limit, expire_in, created_at, _ in rows:
            job = Job(
                job_id,
                queue,
                data,
                attempt,
                priority,
                retry_limit,
                expire_in,
                created_at,
                heartbeat,
                progress,
            )
            put((job, now + expire_in))
        # One idle slot per waiting job, up to ``concurrency`` slots in all.
        missing = min(self.concurrency, len(self._running) + self._inbox.qsize())
        missing -= len(self._slots)
        if missing > 0:
            loop = asyncio.get_running_loop()
            first = len(self._slots)
            self._slots.extend(
                loop.create_task(self._slot(), name=f"slot:{self.queue}:{first + n}")
                for n in range(missing)
            )

    async def _slot(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        inbox = self._inbox
        running = self._running
        while True:
            try:
                job, deadline = await inbox.get()
            except asyncio.CancelledError:
                if self._stopping:
                    raise
                # A lease cancel that arrived just after its handler returned.
                task.uncancel()
                continue
            running[job.id] = (job, task, deadline)
            self._all_idle.clear()
            try:
                await self._execute(job, task)
            finally:
                del running[job.id]
                self._lease_expired.discard(job.id)
                self._slot_freed.set()
                if not running:
                    self._all_idle.set()

    async def _execute(self, job: Job, task: asyncio.Task[None]) -> None:
        completer = self._completer
        try:
            result = await self.handler(job)
        except asyncio.CancelledError:
            if self._releasing:
                completer.release(job)
                raise
            if job.id not in self._lease_expired:
                raise
            task.uncancel()
            completer.fail(job, error_document(_lease_lost(job), self.client.redact))
        except Snooze as snooze:
            completer.release(job, snooze.delay)
            self.snoozed += 1
        except Exception as exc:
            # An exception that says ``retryable = False`` (e.g. an auth error that needs a
            # person) fails the job at once, whatever retries remain.
            final = getattr(exc, "retryable", True) is False
            completer.fail(job, error_document(exc, self.client.redact), final=final)
        else:
            if result is None:
                completer.complete(job, None)
            else:
                try:
                    output = encode_payload(
                        result, limit=self.client.max_payload_bytes, what="handler output"
                    )
                    # Outputs are scrubbed like errors: a handler returning its token
                    # must not store it.
                    redact = self.client.redact
                    completer.complete(job, output if redact is None else redact(output))
                except Exception as exc:
                    completer.fail(job, error_document(exc, self.client.redact))

    async def _heartbeat(self, job: Job) -> bool:
        client = self.client
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                client.sql["job_heartbeat_many"],
                {"ids": [job.id], "attempts": [job.attempt], "now": client.clock.now()},
            )
            alive = await cur.fetchone() is not None
        entry = self._running.get(job.id)
        if alive and entry is not None:
            self._running[job.id] = (job, entry[1], time.monotonic() + job.expire_in)
        return alive

    async def _watchdog(self) -> None:
        """Cancels handlers that outlive their lease, so a hung handler cannot hold a slot
        forever; its attempt is recorded as failed (and retried per policy)."""
        while True:
            await asyncio.sleep(min(1.0, self.poll_interval))
            now = time.monotonic()
            for job, slot, deadline in list(self._running.values()):
                if now > deadline and job.id not in self._lease_expired:
                    log.warning(
                        "job %s exceeded its lease of %.1fs; cancelling", job.id, job.expire_in
                    )
                    self._lease_expired.add(job.id)
                    slot.cancel()


def _lease_lost(job: Job) -> _LeaseLost:
    return _LeaseLost(
        f"handler ran longer than the job's lease ({job.expire_in:g}s) without heartbeat"
    )
