"""What a handler gets: ids, config, HTTP client, logger, state, ``emit`` and
``checkpoint``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from pydantic import BaseModel

from patchbay.queue import Job

from .errors import ConfigError
from .http import HttpClient
from .records import Record

__all__ = ["CheckContext", "JobContext", "RunStats"]

ConfigT = TypeVar("ConfigT", bound=BaseModel)

SecretResolver = Callable[[str], Any]


@dataclass(slots=True)
class RunStats:
    """What one run did: records emitted per stream, checkpoints, HTTP requests."""

    records: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    http_requests: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "records": dict(self.records),
            "checkpoints": self.checkpoints,
            "http_requests": self.http_requests,
        }


class CheckContext(Generic[ConfigT]):
    """What ``Connector.check`` gets: the tenant, the config, an HTTP client, secrets."""

    def __init__(
        self,
        *,
        tenant: str,
        integration: str,
        config: ConfigT,
        http: HttpClient,
        resolve: SecretResolver,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.tenant = tenant
        self.integration = integration
        self.config = config
        self.http = http
        self.log = log
        self._resolve = resolve

    async def secret(self, ref: str) -> str:
        """Resolve a secret reference of this tenant (never another tenant's); the value
        is registered for redaction from logs, errors and traces."""
        value = await self._resolve(ref)
        if not isinstance(value, str):
            raise ConfigError(f"secret {ref} did not resolve to text")
        return value


class JobContext(CheckContext[ConfigT]):
    """What a sync or backfill handler gets.

    ``state`` is the cursor state stored by the last checkpoint (``{}`` the first time, or
    on a full refresh). ``emit(stream, records)`` buffers records; ``checkpoint(state)``
    writes the buffered records and the new state in one transaction. Returning from the
    handler checkpoints what is still buffered; raising discards it.
    """

    def __init__(
        self,
        *,
        tenant: str,
        integration: str,
        config: ConfigT,
        http: HttpClient,
        resolve: SecretResolver,
        log: logging.LoggerAdapter[logging.Logger],
        job: Job | None,
        job_type: str,
        state: dict[str, Any],
        full_refresh: bool,
        commit: Callable[[dict[str, list[tuple[str, Record]]], dict[str, Any]], Any],
        correlation_id: str,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(
            tenant=tenant,
            integration=integration,
            config=config,
            http=http,
            resolve=resolve,
            log=log,
        )
        self.job = job
        self.job_type = job_type
        self.state: dict[str, Any] = dict(state)
        self.full_refresh = full_refresh
        self.correlation_id = correlation_id
        #: Scrubs resolved secrets from text (the vault's redactor; identity without one).
        self.redact: Callable[[str], str] = redact or (lambda text: text)
        self.stats = RunStats()
        self._buffer: dict[str, list[tuple[str, Record]]] = {}
        self._commit = commit
        self._span = trace.get_current_span()

    def emit(self, stream: str, records: Iterable[Record], *, id_field: str = "id") -> int:
        """Buffer records of ``stream``; each needs an external id in ``id_field``.
        Returns how many were buffered."""
        batch = self._buffer.setdefault(stream, [])
        count = 0
        for record in records:
            if not isinstance(record, Mapping) or record.get(id_field) in (None, ""):
                raise ConfigError(
                    f"a record of stream {stream!r} has no {id_field!r}: records need an "
                    "external id so writes are idempotent"
                )
            batch.append((str(record[id_field]), record))
            count += 1
        self.stats.records[stream] = self.stats.records.get(stream, 0) + count
        return count

    async def checkpoint(self, state: Mapping[str, Any] | None = None) -> None:
        """Commit the buffered records and ``state`` (default: the current ``self.state``)
        together."""
        if state is not None:
            self.state = dict(state)
        buffered, self._buffer = self._buffer, {}
        await self._commit(buffered, self.state)
        self.stats.checkpoints += 1

    @property
    def pending_records(self) -> int:
        """Records emitted since the last checkpoint."""
        return sum(len(batch) for batch in self._buffer.values())

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Add an attribute to the job's span (text is scrubbed of resolved secrets)."""
        self._span.set_attribute(key, self.redact(value) if isinstance(value, str) else value)
