"""patchbay.runtime: the product on top of the queue, the vault and the connector SDK.

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

# Imported on first use: SQLAlchemy takes most of a second to import, and every
# ``patchbay`` command imports this package.
_LAZY = {
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
    "AuditEvent",
    "CheckFailed",
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
    "TenantDisabled",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "UnknownConnector",
    "validate_cron",
]
