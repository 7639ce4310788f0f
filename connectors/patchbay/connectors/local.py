"""Run one connector job locally, without the queue: the author's dry run.

Records and state stay in memory; secrets come from a mapping of references to values (or
any async resolver), so an author can try a connector against the real API before
installing it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .connector import Connector, Window
from .context import JobContext, RunStats
from .errors import ConfigError, InvalidConnector
from .executor import _validate_config
from .http import HttpClient
from .records import Record

__all__ = ["LocalRun", "run_local"]


@dataclass(slots=True)
class LocalRun:
    """What a local run produced: records per stream, the final state, stats."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)


async def run_local(
    connector: Connector[Any],
    job_type: str,
    config: Mapping[str, Any],
    *,
    state: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | Callable[[str], Awaitable[str]] | None = None,
    tenant: str = "local",
    integration: str = "local",
    since: datetime | None = None,
    until: datetime | None = None,
    http_factory: Callable[[], HttpClient] = HttpClient,
) -> LocalRun:
    """Run ``job_type`` once (a backfill: every window of ``[since, until)`` in order)."""
    kind = connector.job_type(job_type)
    model = _validate_config(connector, dict(config))
    result = LocalRun(state=dict(state or {}))

    async def resolve(ref: str) -> str:
        if callable(secrets):
            return await secrets(ref)
        if secrets is None or ref not in secrets:
            raise ConfigError(f"no value given for {ref} (pass it in the secrets file)")
        return secrets[ref]

    async def commit(
        buffered: dict[str, list[tuple[str, Record]]], new_state: dict[str, Any]
    ) -> None:
        for stream, pairs in buffered.items():
            result.records.setdefault(stream, []).extend(record for _, record in pairs)
        result.state = dict(new_state)

    windows: list[Window | None] = [None]
    if kind.kind == "backfill":
        if since is None or until is None or kind.window is None or not since < until:
            raise InvalidConnector("a local backfill needs since < until")
        count = -(-(until - since) // kind.window)
        windows = [
            Window(since + i * kind.window, min(until, since + (i + 1) * kind.window), i, count)
            for i in range(count)
        ]
    logger = logging.LoggerAdapter(
        logging.getLogger(f"patchbay.connectors.{connector.name}"),
        {"tenant": tenant, "integration": integration, "job_type": job_type},
    )
    method = connector.method_for(job_type)
    for window in windows:
        http = http_factory()
        ctx: JobContext[Any] = JobContext(
            tenant=tenant,
            integration=integration,
            config=model,
            http=http,
            resolve=resolve,
            log=logger,
            job=None,
            job_type=job_type,
            state=result.state if window is None else {},
            full_refresh=False,
            commit=commit,
            correlation_id=uuid.uuid4().hex,
        )
        try:
            await (method(ctx) if window is None else method(ctx, window))
            await ctx.checkpoint()
        finally:
            result.stats.http_requests += http.requests
            await http.aclose()
        for stream, count_ in ctx.stats.records.items():
            result.stats.records[stream] = result.stats.records.get(stream, 0) + count_
        result.stats.checkpoints += ctx.stats.checkpoints
    return result
