"""The ``Connector`` base class and the job-type decorators.

A connector is a class with a name, a version, a pydantic config model, an optional
``check()``, and job types declared by decorating async methods::

    class Contacts(Connector[ContactsConfig]):
        name = "contacts"
        version = "1.2.0"
        config_model = ContactsConfig

        @sync(every="*/15 * * * *")
        async def contacts(self, ctx: JobContext[ContactsConfig]) -> None: ...

        @backfill(window=timedelta(days=7))
        async def contacts_history(self, ctx: JobContext[ContactsConfig], window: Window) -> None:
            ...

Each job type runs on its own queue, ``<connector name>.<job type>``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from croniter import croniter
from pydantic import BaseModel

from .errors import InvalidConnector, JobTypeNotFound

if TYPE_CHECKING:
    from .context import CheckContext

__all__ = ["Connector", "JobKind", "JobType", "Window", "backfill", "sync"]

ConfigT = TypeVar("ConfigT", bound=BaseModel)
JobKind = Literal["sync", "backfill"]
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[None]])

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ATTR = "__patchbay_job_type__"


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a backfill: ``[start, end)``, the ``index``-th of ``total``."""

    start: datetime
    end: datetime
    index: int
    total: int


@dataclass(frozen=True, slots=True)
class JobType:
    """A job type declared with :func:`sync` or :func:`backfill`.

    ``every``: a sync's default five-field cron schedule. ``window``: a backfill's window
    size. ``priority``: the queue priority of its jobs (backfills default lower than syncs,
    so they never hold up incremental syncs). ``rate_share``: the name suffix of the rate
    limit its jobs spend (backfills use ``<provider>:backfill`` by default, a share of the
    provider's budget of their own).
    """

    name: str
    kind: JobKind
    method_name: str
    every: str | None = None
    window: timedelta | None = None
    priority: int = 0
    rate_share: str | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (for ``patchbay connectors list``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "every": self.every,
            "window_s": None if self.window is None else self.window.total_seconds(),
            "priority": self.priority,
        }


def _declare(kind: JobKind, **fields: Any) -> Callable[[HandlerT], HandlerT]:
    def mark(method: HandlerT) -> HandlerT:
        setattr(method, _ATTR, (kind, fields))
        return method

    return mark


def sync(
    *, every: str = "*/15 * * * *", name: str | None = None, priority: int = 0
) -> Callable[[HandlerT], HandlerT]:
    """Declare an incremental sync job type, scheduled ``every`` (five-field cron) by
    default; the method is called as ``method(ctx)``. ``ctx.full_refresh`` tells a full
    refresh from an incremental run."""
    if not croniter.is_valid(every) or len(every.split()) != 5:
        raise InvalidConnector(f"sync schedule {every!r} is not a five-field cron expression")
    return _declare("sync", every=every, name=name, priority=priority)


def backfill(
    *,
    window: timedelta,
    name: str | None = None,
    priority: int = -10,
    rate_share: str | None = "backfill",
) -> Callable[[HandlerT], HandlerT]:
    """Declare a backfill job type: a range is split into ``window``-sized windows, each a
    child job called as ``method(ctx, window)``, at ``priority`` (default -10: after syncs)."""
    if window <= timedelta(0):
        raise InvalidConnector("backfill window must be positive")
    return _declare("backfill", window=window, name=name, priority=priority, rate_share=rate_share)


class Connector(Generic[ConfigT]):
    """Base class of connectors. Subclasses set ``name``, ``version`` and
    ``config_model`` and declare job types with :func:`sync` and :func:`backfill`.

    Versioning: ``payload_version`` and ``state_version`` are stamped on every job and on
    stored state; ``payload_upgrades`` / ``state_upgrades`` map an old version ``n`` to a
    function turning a version-``n`` dict into version ``n + 1``, applied in order when an
    old job or state is read.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    config_model: ClassVar[type[BaseModel]]
    payload_version: ClassVar[int] = 1
    state_version: ClassVar[int] = 1
    payload_upgrades: ClassVar[Mapping[int, Upgrade]] = {}
    state_upgrades: ClassVar[Mapping[int, Upgrade]] = {}

    _job_types: ClassVar[dict[str, JobType]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, JobType] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                marker = getattr(value, _ATTR, None)
                if marker is None:
                    continue
                kind, declared = marker
                fields = dict(declared)
                job_name = fields.pop("name", None) or attr
                found[job_name] = JobType(job_name, kind, attr, **fields)
        cls._job_types = found

    @classmethod
    def validate_class(cls) -> None:
        """Raise InvalidConnector unless the class is complete and well-formed."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidConnector(
                f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}"
            )
        model = getattr(cls, "config_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise InvalidConnector(f"{cls.__qualname__}.config_model must be a pydantic model")
        if not cls._job_types:
            raise InvalidConnector(f"{cls.__qualname__} declares no job types (@sync/@backfill)")
        for job in cls._job_types.values():
            if not _NAME.match(job.name):
                raise InvalidConnector(f"job type name {job.name!r} is not a lower-case identifier")
        for label, upgrades, current in (
            ("payload", cls.payload_upgrades, cls.payload_version),
            ("state", cls.state_upgrades, cls.state_version),
        ):
            if any(not 1 <= v < current for v in upgrades):
                raise InvalidConnector(
                    f"{label}_upgrades keys must be versions below {label}_version={current}"
                )

    @classmethod
    def job_types(cls) -> dict[str, JobType]:
        """The declared job types by name."""
        return dict(cls._job_types)

    @classmethod
    def job_type(cls, name: str) -> JobType:
        """One job type; raises JobTypeNotFound."""
        try:
            return cls._job_types[name]
        except KeyError:
            known = ", ".join(sorted(cls._job_types)) or "none"
            raise JobTypeNotFound(
                f"connector {cls.name!r} has no job type {name!r} (it has: {known})"
            ) from None

    @classmethod
    def queue_name(cls, job_type: str) -> str:
        """The queue a job type runs on."""
        return f"{cls.name}.{cls.job_type(job_type).name}"

    async def check(self, ctx: CheckContext[ConfigT]) -> None:
        """Validate config and credentials against the real API; raise AuthError or
        ConfigError when they are wrong. The default accepts any valid config."""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: name, version, job types and config schema."""
        from .config import config_schema

        return {
            "name": self.name,
            "version": self.version,
            "job_types": [j.describe() for j in self._job_types.values()],
            "config_schema": config_schema(self.config_model),
        }

    def method_for(self, job_type: str) -> Callable[..., Awaitable[None]]:
        """The bound method implementing a job type."""
        method: Callable[..., Awaitable[None]] = getattr(self, self.job_type(job_type).method_name)
        return method


def upgrade(
    data: dict[str, Any], version: int, current: int, steps: Mapping[int, Upgrade], what: str
) -> dict[str, Any]:
    """Apply ``steps`` from ``version`` up to ``current``; raises InvalidConnector when a
    step is missing or the data is newer than the connector."""
    if version > current:
        raise InvalidConnector(
            f"{what} version {version} is newer than this connector understands ({current})"
        )
    while version < current:
        step = steps.get(version)
        if step is None:
            raise InvalidConnector(f"no upgrade for {what} version {version} -> {version + 1}")
        data = step(dict(data))
        version += 1
    return data
