"""SQLAlchemy 2 models of the runtime's tables (``migrations/0009_runtime.sql``).

The SQL migrations own the schema; these models mirror it (a test compares them with a
freshly migrated schema). They are declared without a schema: bind them to one with
``schema_translate_map={None: schema}``, which :func:`create_engine` does::

    engine = create_engine("postgresql://...", schema="patchbay")
    async with AsyncSession(engine) as session:
        tenant = await session.get(Tenant, "acme")
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    Uuid,
    make_url,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Incident",
    "Integration",
    "IntegrationEvent",
    "Tenant",
    "create_engine",
    "sqlalchemy_url",
]

_NOW = text("now()")


class Base(DeclarativeBase):
    """Declarative base of the runtime's models (no schema: see the module docstring)."""

    metadata = MetaData()
    type_annotation_map = {
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
        str: Text,
    }


class Tenant(Base):
    """A customer of the deployment: its integrations share its limits and fair share."""

    __tablename__ = "tenant"
    __table_args__ = (
        CheckConstraint("status in ('active', 'disabled')", name="tenant_status_check"),
        CheckConstraint(
            "max_concurrent is null or max_concurrent >= 1", name="tenant_max_concurrent_check"
        ),
        CheckConstraint(
            "starts_per_interval is null or starts_per_interval >= 1",
            name="tenant_starts_per_interval_check",
        ),
        CheckConstraint("start_interval_s > 0", name="tenant_start_interval_s_check"),
        CheckConstraint("fairness_weight between 1 and 1000", name="tenant_fairness_weight_check"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    status: Mapped[str] = mapped_column(server_default=text("'active'"))
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    starts_per_interval: Mapped[int | None] = mapped_column(Integer)
    start_interval_s: Mapped[float] = mapped_column(Double, server_default=text("60"))
    fairness_weight: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    sync_schedule: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=_NOW)


class Integration(Base):
    """One tenant's use of one connector: its config (secrets as references), schedule
    override, status and failure counters."""

    __tablename__ = "integration"
    __table_args__ = (
        CheckConstraint(
            "status in ('active', 'paused', 'needs_attention', 'disabled')",
            name="integration_status_check",
        ),
        Index("integration_tenant_status_idx", "tenant_id", "status"),
        Index("integration_connector_idx", "connector"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    connector: Mapped[str]
    config: Mapped[dict[str, Any]]
    schedule: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default=text("'active'"))
    failure_policy: Mapped[dict[str, Any] | None]
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    last_error: Mapped[dict[str, Any] | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    #: When the scheduler last enqueued a scheduled sync (its due check reads this).
    last_scheduled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=_NOW)


class IntegrationEvent(Base):
    """One entry of the audit stream: a lifecycle event of an integration, in ``id``
    order. No foreign key: the stream is append-only and outlives nothing it refers to."""

    __tablename__ = "integration_event"
    __table_args__ = (
        Index("integration_event_integration_idx", "integration_id", "id"),
        Index("integration_event_at_idx", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    integration_id: Mapped[str]
    tenant_id: Mapped[str]
    at: Mapped[datetime] = mapped_column(server_default=_NOW)
    kind: Mapped[str]
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class Incident(Base):
    """An attention incident: one per integration episode, or a provider-level, endpoint
    or alert incident (owned by the failure policy)."""

    __tablename__ = "incident"
    __table_args__ = (
        CheckConstraint(
            "scope in ('integration', 'provider', 'endpoint', 'alert')",
            name="incident_scope_check",
        ),
        CheckConstraint("level in ('warning', 'attention')", name="incident_level_check"),
        CheckConstraint("status in ('open', 'resolved')", name="incident_status_check"),
        Index(
            "incident_open_integration_uidx",
            "integration_id",
            unique=True,
            postgresql_where=text("status = 'open' and scope = 'integration'"),
        ),
        Index(
            "incident_open_subject_uidx",
            "scope",
            "subject",
            unique=True,
            postgresql_where=text("status = 'open' and scope <> 'integration'"),
        ),
        Index("incident_status_idx", "status", "opened_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    scope: Mapped[str]
    level: Mapped[str] = mapped_column(server_default=text("'attention'"))
    status: Mapped[str] = mapped_column(server_default=text("'open'"))
    tenant_id: Mapped[str | None]
    integration_id: Mapped[str | None]
    connector: Mapped[str | None]
    subject: Mapped[str | None]
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("incident.id"))
    title: Mapped[str]
    last_error: Mapped[dict[str, Any] | None]
    failing_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    failure_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    first_failure_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    opened_at: Mapped[datetime] = mapped_column(server_default=_NOW)
    escalated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None]


def sqlalchemy_url(url: str) -> URL:
    """A plain ``postgresql://`` (or ``postgres://``) URL as SQLAlchemy's psycopg 3 URL,
    ``postgresql+psycopg://``; a URL naming a driver already is kept as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("the database URL must look like postgresql://user@host/db")
    if scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg://{rest}"
    return make_url(url)


def create_engine(url: str, *, schema: str, **options: Any) -> AsyncEngine:
    """An async engine (psycopg 3) on ``url`` whose models live in ``schema``; ``options``
    go to :func:`sqlalchemy.ext.asyncio.create_async_engine`."""
    engine = create_async_engine(sqlalchemy_url(url), **options)
    return engine.execution_options(schema_translate_map={None: schema})
