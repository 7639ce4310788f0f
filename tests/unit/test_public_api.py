"""The public API of ``patchbay.queue`` is exactly what ``__all__`` lists, pinned here, and
every public name carries its own docstring."""

from __future__ import annotations

import inspect

import pytest

import patchbay.queue
from patchbay.queue import errors

EXPECTED_QUEUE_API = [
    "Clock",
    "DatabaseUnavailable",
    "FrozenClock",
    "Handler",
    "InvalidInput",
    "InvalidJobState",
    "InvalidName",
    "InvalidOption",
    "InvalidPayload",
    "InvalidSchedule",
    "Job",
    "JobDiagnosis",
    "JobEvent",
    "JobEventKind",
    "JobNotFound",
    "JobPage",
    "JobRecord",
    "JobSpec",
    "JobState",
    "MigrationError",
    "PayloadTooLarge",
    "QueueAlreadyExists",
    "QueueClient",
    "QueueError",
    "QueueInfo",
    "QueueNotFound",
    "QueueSettings",
    "QueueStats",
    "ScheduleFire",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Schedules",
    "SendOptions",
    "Snooze",
    "Statements",
    "SyncQueueClient",
    "SystemClock",
    "TickResult",
    "Worker",
    "migrate",
    "migrate_sync",
]


@pytest.mark.smoke
def test_queue_all_is_pinned() -> None:
    assert sorted(patchbay.queue.__all__) == EXPECTED_QUEUE_API
    assert len(set(patchbay.queue.__all__)) == len(patchbay.queue.__all__)


def _own_doc(obj: object) -> str:
    # A class inheriting its parent's docstring, or a typing alias showing its origin's,
    # does not document itself: look only at the object's own __doc__.
    own = vars(obj).get("__doc__") if hasattr(obj, "__dict__") else None
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        own = obj.__doc__
    return (own or "").strip()


@pytest.mark.parametrize("name", EXPECTED_QUEUE_API)
def test_every_public_name_has_its_own_docstring(name: str) -> None:
    obj = getattr(patchbay.queue, name)
    assert _own_doc(obj), f"patchbay.queue.{name} has no docstring"


@pytest.mark.parametrize(
    "cls",
    [patchbay.queue.QueueClient, patchbay.queue.SyncQueueClient, patchbay.queue.Worker],
)
def test_public_methods_have_docstrings(cls: type) -> None:
    missing = [
        name
        for name, member in vars(cls).items()
        if not name.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not (member.__doc__ or "").strip()
    ]
    assert missing == [], f"{cls.__name__} methods without docstrings: {missing}"


def test_error_tree_matches_the_errors_module_docstring() -> None:
    # Every error is a QueueError and is drawn in the module's tree diagram.
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.QueueError)
        assert name in doc, f"{name} missing from the error tree in errors.py"
    for name in ("InvalidName", "InvalidOption", "InvalidPayload", "PayloadTooLarge"):
        assert issubclass(getattr(errors, name), errors.InvalidInput)
        assert issubclass(getattr(errors, name), ValueError)
    assert issubclass(errors.QueueNotFound, LookupError)
    assert issubclass(errors.JobNotFound, LookupError)
