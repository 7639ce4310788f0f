"""The contacts connector: contacts of the sample REST API into the ``contacts`` stream.

The API (see :mod:`patchbay_example_contacts.fake_api` for a fake of it) lists contacts
sorted by ``(updated_at, id)``, a page at a time, behind a bearer token. Its position
filter ``updated_after`` + ``after_id`` resumes exactly after the last contact seen, so
the cursor this connector keeps is that pair:

- ``contacts`` (sync, every 15 minutes): lists the contacts changed since the cursor and
  checkpoints after every page, so a run that dies resumes from its last page, never from
  the start, and never skips a contact. A full refresh starts from nothing.
- ``contacts_history`` (backfill, one window per day): lists the contacts updated within
  each window; a window's retry resumes from that window's own checkpoint.

Errors need no code here: the SDK's HTTP client turns 401/403 into AuthError (the job
stops and asks for a person), 429 into RateLimited (the job waits for Retry-After without
spending an attempt) and retries connection errors and 5xx itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator

from patchbay.connectors import (
    CheckContext,
    ConfigError,
    Connector,
    ConnectorConfig,
    JobContext,
    RequestFailed,
    SecretField,
    Window,
    backfill,
    sync,
)

__all__ = ["ContactsConfig", "ContactsConnector"]

STREAM = "contacts"


class ContactsConfig(ConnectorConfig):
    """An integration's settings. ``token`` is a ``secret://<tenant>/<name>`` reference:
    the token itself lives in the vault and is resolved only while a job runs."""

    base_url: str = Field(description="the API's base URL, e.g. https://api.example.com")
    token: SecretField = Field(description="reference to the API token in the vault")
    page_size: int = Field(default=100, ge=1, le=200, description="contacts per request")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


def _iso(moment: datetime) -> str:
    """A timestamp as the API writes them: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _config_from_v1(config: dict[str, Any]) -> dict[str, Any]:
    """Payload version 1 (connector 0.1) called ``base_url`` ``api_url``."""
    if "api_url" in config:
        config["base_url"] = config.pop("api_url")
    return config


def _state_from_v1(state: dict[str, Any]) -> dict[str, Any]:
    """State version 1 kept only a timestamp, ``since``; version 2 keeps the position
    ``(updated_after, after_id)``. Without an id, resuming after the timestamp is what
    version 1 did."""
    if "since" in state:
        return {"updated_after": state["since"]}
    return state


async def _authorize(ctx: CheckContext[ContactsConfig]) -> None:
    # Resolved just in time, for this job's tenant only; the vault registers the value with
    # the redactor, so it is scrubbed from job errors and logs.
    token = await ctx.secret(ctx.config.token)
    ctx.http.set_header("Authorization", f"Bearer {token}")


def _position(contact: dict[str, Any]) -> dict[str, str]:
    return {"updated_after": contact["updated_at"], "after_id": contact["id"]}


def _after(state: dict[str, Any]) -> dict[str, str]:
    """The query parameters resuming after the position kept in ``state``."""
    params = {"updated_after": str(state["updated_after"])}
    if state.get("after_id"):
        params["after_id"] = str(state["after_id"])
    return params


class ContactsConnector(Connector[ContactsConfig]):
    """Contacts of the sample API, incrementally (``contacts``) and by day
    (``contacts_history``)."""

    name = "contacts"
    version = "0.2.0"
    config_model = ContactsConfig
    # Version 2 renamed a config field and changed the cursor's shape; jobs and state
    # written by version 1 are upgraded when read.
    payload_version = 2
    state_version = 2
    payload_upgrades = {1: _config_from_v1}
    state_upgrades = {1: _state_from_v1}

    async def check(self, ctx: CheckContext[ContactsConfig]) -> None:
        """Call ``/v1/me`` with the token: a rejected token raises AuthError."""
        await _authorize(ctx)
        response = await ctx.http.get(f"{ctx.config.base_url}/v1/me")
        if response.status_code == 404:
            raise ConfigError(f"{ctx.config.base_url} does not look like the contacts API")
        if not response.is_success:
            raise RequestFailed(f"GET /v1/me answered {response.status_code}", response.status_code)

    @sync(every="*/15 * * * *")
    async def contacts(self, ctx: JobContext[ContactsConfig]) -> None:
        """Contacts changed since the last run (all of them on a full refresh)."""
        await _authorize(ctx)
        params: dict[str, Any] = {"limit": ctx.config.page_size}
        if ctx.state.get("updated_after") and not ctx.full_refresh:
            params |= _after(ctx.state)
        pages = ctx.http.paginate(f"{ctx.config.base_url}/v1/contacts", params=params)
        async for page in pages:
            ctx.emit(STREAM, page.items)
            if page.items:
                # The API sorts by (updated_at, id): the page's last contact is the position.
                ctx.state.update(_position(page.items[-1]))
            # Records and cursor commit together: a crash after this never re-reads this
            # page, a crash before it re-reads only this page.
            await ctx.checkpoint()
        ctx.log.info("synced %d contact(s)", ctx.stats.records.get(STREAM, 0))

    @backfill(window=timedelta(days=1))
    async def contacts_history(self, ctx: JobContext[ContactsConfig], window: Window) -> None:
        """Contacts updated within ``[window.start, window.end)``."""
        await _authorize(ctx)
        params: dict[str, Any] = {
            "limit": ctx.config.page_size,
            "updated_before": _iso(window.end),
        }
        if ctx.state.get("updated_after"):
            params |= _after(ctx.state)  # a retried window resumes from its checkpoint
        else:
            params["updated_since"] = _iso(window.start)
        pages = ctx.http.paginate(f"{ctx.config.base_url}/v1/contacts", params=params)
        async for page in pages:
            ctx.emit(STREAM, page.items)
            if page.items:
                ctx.state.update(_position(page.items[-1]))
            await ctx.checkpoint()
