"""patchbay.connectors: the SDK connector authors program against.

Declare a ``Connector`` with a pydantic config model (secrets as references) and job types
(``@sync``, ``@backfill``); handlers get a ``JobContext`` with an HTTP client, a logger,
the cursor ``state``, ``emit`` and ``checkpoint``. ``ConnectorExecutor`` runs them on the
queue; ``run_local`` runs one without it.
"""

from .config import ConnectorConfig, SecretField, config_schema, secret_fields
from .connector import Connector, JobKind, JobType, Window, backfill, sync
from .context import CheckContext, JobContext, RunStats
from .errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    ConnectorNotFound,
    InvalidConnector,
    JobTypeNotFound,
    RateLimited,
    RequestFailed,
    RequestRejected,
    SdkError,
    TransientError,
)
from .executor import ConnectorExecutor, ExecutionHooks, RunInfo
from .http import HttpClient, Page, retry_after_seconds
from .local import LocalRun, run_local
from .plugins import ENTRY_POINT_GROUP, discover, load_connector
from .records import Destination, PostgresDestination, Record

__all__ = [
    "ENTRY_POINT_GROUP",
    "AuthError",
    "CheckContext",
    "ConfigError",
    "Connector",
    "ConnectorConfig",
    "ConnectorError",
    "ConnectorExecutor",
    "ConnectorNotFound",
    "Destination",
    "ExecutionHooks",
    "HttpClient",
    "InvalidConnector",
    "JobContext",
    "JobKind",
    "JobType",
    "JobTypeNotFound",
    "LocalRun",
    "Page",
    "PostgresDestination",
    "RateLimited",
    "Record",
    "RequestFailed",
    "RequestRejected",
    "RunInfo",
    "RunStats",
    "SdkError",
    "SecretField",
    "TransientError",
    "Window",
    "backfill",
    "config_schema",
    "discover",
    "load_connector",
    "retry_after_seconds",
    "run_local",
    "secret_fields",
    "sync",
]
