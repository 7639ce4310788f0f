"""Errors raised by ``patchbay.runtime``.

Every error of the registry derives from :class:`RegistryError`, so callers can catch it
at once. Bad input is also a :class:`patchbay.queue.InvalidInput` (and so a ``ValueError``),
a missing row also a ``LookupError``. A call that raises any of them wrote nothing::

    RegistryError
    ├── InvalidRegistryInput     bad input; nothing was written (also queue.InvalidInput)
    │   ├── InvalidId            a tenant or integration id that is not allowed
    │   ├── InvalidLimits        a tenant limit out of range (the message names it)
    │   ├── InvalidCron          a sync schedule that is not a valid cron expression
    │   ├── InvalidConfig        the config fails the connector's model (pydantic's message)
    │   │   └── SecretNotReference   a secret field holds a value, not a secret:// reference
    │   ├── UnknownConnector     no installed connector has that name (also LookupError)
    │   ├── TenantExists         a tenant with that id exists already
    │   ├── IntegrationExists    an integration with that id exists already
    │   ├── TenantDisabled       the tenant is disabled: it takes no new integrations
    │   └── CheckFailed          the connector's check() refused the config or credentials
    ├── TenantNotFound           no tenant has that id (also LookupError)
    ├── IntegrationNotFound      no integration has that id (also LookupError)
    └── InvalidTransition        the integration's status does not allow the operation
"""

from __future__ import annotations

from patchbay.queue import InvalidInput

__all__ = [
    "CheckFailed",
    "IntegrationExists",
    "IntegrationNotFound",
    "InvalidConfig",
    "InvalidCron",
    "InvalidId",
    "InvalidLimits",
    "InvalidRegistryInput",
    "InvalidTransition",
    "RegistryError",
    "SecretNotReference",
    "TenantDisabled",
    "TenantExists",
    "TenantNotFound",
    "UnknownConnector",
]


class RegistryError(Exception):
    """Base class of every error raised by the registry of tenants and integrations."""


class InvalidRegistryInput(RegistryError, InvalidInput):
    """The call's input is invalid. Nothing was written; correct the input and call again."""


class InvalidId(InvalidRegistryInput):
    """Tenant and integration ids are 1-100 characters of letters, digits and ``_ . -``,
    starting with a letter or digit (tenant ids appear in ``secret://<tenant>/...``)."""


class InvalidLimits(InvalidRegistryInput):
    """A tenant limit is out of range: max concurrent jobs and starts per interval are
    whole numbers >= 1 (or unset), the interval is > 0 seconds, the fairness weight is
    1-1000."""


class InvalidCron(InvalidRegistryInput):
    """A sync schedule must be a five-field cron expression (minute hour day-of-month
    month day-of-week) or one of ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
    ``@yearly``."""


class InvalidConfig(InvalidRegistryInput):
    """The integration's config does not validate against the connector's config model;
    the message lists each field and what is wrong with it (never the value)."""


class SecretNotReference(InvalidConfig):
    """A secret field holds a value instead of a reference. Store the value with
    ``patchbay secrets put <tenant> <name>`` and put ``secret://<tenant>/<name>`` in the
    config; a reference must name the integration's own tenant."""


class UnknownConnector(InvalidRegistryInput, LookupError):
    """No installed connector has that name. Install its plugin package (entry point group
    ``patchbay.connectors``); the message lists the connectors that are installed."""


class TenantExists(InvalidRegistryInput):
    """A tenant with that id exists already; ids are never reused."""


class IntegrationExists(InvalidRegistryInput):
    """An integration with that id exists already; ids are never reused."""


class TenantDisabled(InvalidRegistryInput):
    """The tenant is disabled: it takes no new integrations, and its integrations cannot be
    resumed or synced."""


class CheckFailed(InvalidRegistryInput):
    """The connector's ``check()`` refused the config or the credentials (the message says
    why, redacted). Fix the config or the secret, then add the integration again."""


class TenantNotFound(RegistryError, LookupError):
    """No tenant has that id; ``patchbay tenants list`` shows the ones that exist."""


class IntegrationNotFound(RegistryError, LookupError):
    """No integration has that id; ``patchbay integrations list`` shows them."""


class InvalidTransition(RegistryError):
    """The integration's status does not allow the operation (e.g. pausing a disabled
    integration); the message names the status and what is allowed."""
