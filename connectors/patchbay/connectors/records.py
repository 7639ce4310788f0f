"""Where emitted records go, and how they commit with the cursor.

A :class:`Destination` receives each checkpoint's records inside the transaction that also
stores the new cursor state, so a crash never advances the cursor past records that were
not written. The default, :class:`PostgresDestination`, upserts into ``connector_record``
by (integration, stream, external id): replaying a page writes nothing twice. A destination
outside Postgres cannot join that transaction: it must be idempotent by external id, and
it is called before the state commits, so a crash re-sends rather than loses records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import psycopg

from patchbay.queue import Statements

__all__ = ["Destination", "PostgresDestination", "Record"]

Record = Mapping[str, Any]


class Destination(Protocol):
    """Receives records; ``conn`` is the checkpoint's open transaction."""

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        integration: str,
        stream: str,
        records: Sequence[tuple[str, Record]],
    ) -> None:
        """Write ``(external_id, record)`` pairs of one stream."""
        ...


class PostgresDestination:
    """The default destination: the ``connector_record`` table of patchbay's schema."""

    def __init__(self, schema: str = "patchbay") -> None:
        self._sql = Statements(schema, package="patchbay.connectors")

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        integration: str,
        stream: str,
        records: Sequence[tuple[str, Record]],
    ) -> None:
        """Upsert the records (unchanged ones are left alone)."""
        if not records:
            return
        await conn.execute(
            self._sql["connector_record_upsert_many"],
            {
                "integration": integration,
                "stream": stream,
                "ids": [external_id for external_id, _ in records],
                "data": [json.dumps(record, separators=(",", ":")) for _, record in records],
            },
        )
