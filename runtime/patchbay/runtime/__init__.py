"""patchbay.runtime: the product on top of the queue, the vault and the connector SDK.

The daemon (:class:`Daemon`, configured by :class:`DaemonSettings`) runs everything; an
application can embed it (``examples/poc``) and read an integration's audit stream with
:class:`AuditLog`.

The registry of tenants and integrations (:class:`Registry`), with the audit stream of
integrations (:class:`AuditEvent`, exported through :class:`EventSink`); its errors are
drawn in :mod:`patchbay.runtime.errors`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckFailed,
    IntegrationExists,
    IntegrationNotFound,
    InvalidConfig,
    InvalidCron,
    InvalidId,
    InvalidLimits,
    InvalidRegistryInput,
    InvalidTransition,
    RegistryError,
    SecretNotReference,
    TenantDisabled,
    TenantExists,
    TenantNotFound,
    UnknownConnector,
)

if TYPE_CHECKING:
    from .audit import AuditEntry, AuditLog
    from .daemon import Daemon, DaemonParts
    from .database import resolve_database_url
    from .notifications import SlackChannel
    from .registry import (
        EVENT_KINDS,
        AuditEvent,
        EventSink,
        IntegrationInfo,
        Registry,
        ResumeContext,
        ResumeHook,
        TenantInfo,
        validate_cron,
    )
    from .settings import DaemonSettings

# Imported on first use: SQLAlchemy takes most of a second to import, and every
# ``patchbay`` command imports this package.
_LAZY = {
    "AuditEntry": ".audit",
    "AuditLog": ".audit",
    "Daemon": ".daemon",
    "DaemonParts": ".daemon",
    "DaemonSettings": ".settings",
    "SlackChannel": ".notifications",
    "resolve_database_url": ".database",
    "EVENT_KINDS": ".registry",
    "AuditEvent": ".registry",
    "EventSink": ".registry",
    "IntegrationInfo": ".registry",
    "Registry": ".registry",
    "ResumeContext": ".registry",
    "ResumeHook": ".registry",
    "TenantInfo": ".registry",
    "validate_cron": ".registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "EVENT_KINDS",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "CheckFailed",
    "Daemon",
    "DaemonParts",
    "DaemonSettings",
    "EventSink",
    "IntegrationExists",
    "IntegrationInfo",
    "IntegrationNotFound",
    "InvalidConfig",
    "InvalidCron",
    "InvalidId",
    "InvalidLimits",
    "InvalidRegistryInput",
    "InvalidTransition",
    "Registry",
    "RegistryError",
    "ResumeContext",
    "ResumeHook",
    "SecretNotReference",
    "SlackChannel",
    "TenantDisabled",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "UnknownConnector",
    "resolve_database_url",
    "validate_cron",
]
