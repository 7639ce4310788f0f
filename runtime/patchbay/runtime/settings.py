"""The daemon's configuration: environment variables ``PATCHBAY_*`` and an optional file.

Every setting documents its default, unit and trade-off; values are validated when the
daemon starts, and a bad one stops it with a message naming the setting.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

from croniter import croniter
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DaemonSettings", "load_settings"]


class DaemonSettings(BaseSettings):
    """Settings of ``patchbay run`` (environment: ``PATCHBAY_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="PATCHBAY_", extra="forbid")

    database_url: str | None = Field(
        None, description="Postgres URL; unset: the embedded Postgres in PATCHBAY_HOME."
    )
    schema_name: str = Field(
        "patchbay", alias="PATCHBAY_SCHEMA", description="Schema of patchbay's tables."
    )
    mode: Literal["production", "development"] = Field(
        "production",
        description="development creates a local master key file beside the embedded "
        "database; production refuses to start without configured master keys.",
    )
    concurrency: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Handler calls at once per job type (more: more throughput and "
        "connections to providers).",
    )
    scheduler_concurrency: int = Field(
        64,
        ge=1,
        le=1000,
        description="Tenant fan-outs at once (sync_all jobs held by this daemon; those held "
        "together are made in a few shared transactions: more is fewer round trips per "
        "tenant, and longer to put back on shutdown).",
    )
    scheduler_tick: str = Field(
        "* * * * *",
        description="Default cron of each tenant's sync_all (each integration still syncs "
        "only when its own cron is due).",
    )
    reconcile_interval: float = Field(
        30.0, gt=0, description="Seconds between syncing tenants' schedules with the registry."
    )
    maintenance_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between maintenance passes (lease expiry, "
        "retention, cron); lower re-runs lost jobs sooner for a little more load.",
    )
    poll_interval: float = Field(
        1.0, gt=0, description="Seconds between fetches when no notification arrives."
    )
    shutdown_grace: float = Field(
        30.0,
        ge=0,
        description="Seconds SIGTERM waits for running handlers before putting their jobs back.",
    )
    pool_max: int = Field(20, ge=2, le=1000, description="Connections of the job pool.")
    notify_log: bool = Field(True, description="Write attention notifications to the log.")
    notify_slack_url: str | None = Field(
        None, description="Slack-compatible incoming webhook for attention notifications."
    )
    notify_smtp_host: str | None = Field(None, description="SMTP host for email notifications.")
    notify_smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    notify_email_from: str | None = Field(None, description="Sender of notification emails.")
    notify_email_to: list[str] = Field(
        default_factory=list, description="Recipients of notification emails."
    )

    notify_tenants: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description='Per-tenant channels, added to the deployment\'s: {"<tenant>": '
        '[{"type": "slack", "url": ...} | {"type": "email", "host": ..., "sender": ..., '
        '"recipients": [...]} | {"type": "log"}]}.',
    )

    webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks webhook deliveries may reach although private or loopback "
        '(e.g. ["10.1.2.0/24"]; default none: only public addresses, the SSRF guard). '
        "Each entry is checked when the daemon starts.",
    )

    audit_export_url: str | None = Field(
        None,
        description="Deliver the audit stream (integration lifecycle and job events) to this "
        "HTTP endpoint: POSTed JSON batches, at least once, one daemon at a time (exporter "
        "'http'; a new exporter starts at the beginning of the stream). Unset: not exported.",
    )
    audit_export_file: str | None = Field(
        None,
        description="Append the audit stream to this file as JSON lines, at least once "
        "(exporter 'file'; every daemon must see the same file). Unset: not exported.",
    )

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (e.g. '127.0.0.1/32')") from None
        return value

    @field_validator("audit_export_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("scheduler_tick")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a five-field cron expression")
        return value


def load_settings(path: Path | None = None, **overrides: Any) -> DaemonSettings:
    """Settings from the environment, then a JSON file (``path``), then ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(json.loads(path.read_text("utf-8")))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DaemonSettings(**values)
