"""Errors of connectors and the SDK.

Raised by connector code to tell the runtime what kind of failure happened::

    ConnectorError
    ├── AuthError          credentials rejected (401/403): not retried, a person must act
    ├── ConfigError        the integration's configuration is wrong: not retried
    ├── RequestRejected    the provider refused the request itself (400, 404, 422...):
    │                      retrying the same request cannot help, not retried
    ├── TransientError     a passing failure: retried with backoff
    │   └── RequestFailed  an HTTP call failed after its own retries
    └── RateLimited        the provider said "slow down": the job goes back to the queue
                           for ``retry_after`` seconds without spending an attempt

Any other exception a handler raises counts as transient. Errors of the SDK's own API::

    SdkError
    ├── ConnectorNotFound  no installed connector has that name
    ├── JobTypeNotFound    the connector has no job type of that name
    └── InvalidConnector   a connector class is malformed (the message says how)
"""

from __future__ import annotations

from patchbay.queue import InvalidInput, Snooze

__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectorError",
    "ConnectorNotFound",
    "InvalidConnector",
    "JobTypeNotFound",
    "RateLimited",
    "RequestFailed",
    "RequestRejected",
    "SdkError",
    "TransientError",
]


class ConnectorError(Exception):
    """Base of the failures connector code raises."""

    #: Whether the queue may retry the job (read by the worker).
    retryable = True


class AuthError(ConnectorError):
    """The provider rejected the credentials (401/403). Not retried: fix the credential
    (``patchbay secrets put``) and resume the integration."""

    retryable = False


class ConfigError(ConnectorError):
    """The integration's configuration is invalid for this connector. Not retried: fix the
    configuration and resume the integration."""

    retryable = False


class TransientError(ConnectorError):
    """A failure expected to pass (timeouts, 5xx); the job is retried with backoff."""


class RequestFailed(TransientError):
    """An HTTP request failed after the client's own retries; ``status`` is the last HTTP
    status (None for a connection error)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RequestRejected(ConnectorError):
    """The provider answered a client error (4xx other than 401/403/408/409/425/429): the
    request itself is wrong (a removed resource, a field the API no longer accepts), so the
    same request would fail again. Not retried: fix the connector or the integration's
    configuration, then resume. ``status`` is the HTTP status."""

    retryable = False

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(Snooze):
    """The provider asked to slow down (429, Retry-After). The job gives its worker slot
    back and runs again after ``retry_after`` seconds, without spending an attempt."""

    def __init__(self, retry_after: float, reason: str = "") -> None:
        super().__init__(max(0.0, float(retry_after)), reason or "rate limited by the provider")
        self.retry_after = self.delay


class SdkError(Exception):
    """Base of errors of the SDK's own API."""


class ConnectorNotFound(SdkError, LookupError):
    """No installed connector has that name; ``patchbay connectors list`` shows them."""


class JobTypeNotFound(SdkError, LookupError):
    """The connector declares no job type of that name."""


class InvalidConnector(SdkError, InvalidInput):
    """A connector class is malformed: missing name, config model or job types."""
