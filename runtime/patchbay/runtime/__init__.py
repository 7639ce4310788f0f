"""patchbay.runtime: the product on top of the queue, the vault and the connector SDK.

The registry of tenants and integrations (:class:`Registry`), with the audit stream of
integrations (:class:`AuditEvent`, exported through :class:`EventSink`); its errors are
drawn in :mod:`patchbay.runtime.errors`.
"""

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
