"""The registry's exception tree (drawn in its module docstring, each class documented) and
cron validation, without a database."""

from __future__ import annotations

import inspect

import pytest

import patchbay.runtime
from patchbay.queue import InvalidInput
from patchbay.runtime import errors, validate_cron


def test_every_error_is_drawn_documented_and_exported() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.RegistryError), name
        assert f" {name} " in doc or doc.rstrip().endswith(name) or f"{name}\n" in doc, name
        assert (vars(cls).get("__doc__") or "").strip(), f"{name} has no docstring"
        assert getattr(patchbay.runtime, name) is cls
        assert name in patchbay.runtime.__all__


def test_bad_input_and_missing_rows_are_the_usual_kinds() -> None:
    for cls in (
        errors.InvalidId,
        errors.InvalidLimits,
        errors.InvalidCron,
        errors.InvalidConfig,
        errors.SecretNotReference,
        errors.UnknownConnector,
        errors.TenantExists,
        errors.IntegrationExists,
        errors.TenantDisabled,
        errors.CheckFailed,
    ):
        assert issubclass(cls, InvalidInput) and issubclass(cls, ValueError), cls
    assert issubclass(errors.SecretNotReference, errors.InvalidConfig)
    for cls in (errors.TenantNotFound, errors.IntegrationNotFound, errors.UnknownConnector):
        assert issubclass(cls, LookupError), cls
    assert not issubclass(errors.InvalidTransition, InvalidInput)


def test_public_registry_names_have_docstrings() -> None:
    for name in ("Registry", "TenantInfo", "IntegrationInfo", "AuditEvent", "ResumeContext"):
        cls = getattr(patchbay.runtime, name)
        assert (vars(cls).get("__doc__") or "").strip(), name
        missing = [
            member
            for member, value in vars(cls).items()
            if not member.startswith("_")
            and (inspect.isfunction(value) or isinstance(value, classmethod | property))
            and not (getattr(value, "__doc__", None) or "").strip()
        ]
        assert missing == [], f"{name}: {missing}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*/15 * * * *", "*/15 * * * *"),
        ("  0   2 * * 1-5 ", "0 2 * * 1-5"),
        ("0 9 1 jan,jul *", "0 9 1 jan,jul *"),
        ("@daily", "@daily"),
        ("@HOURLY", "@hourly"),
    ],
)
def test_valid_crons(text: str, expected: str) -> None:
    assert validate_cron(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "4 field"),
        ("* * * * * *", "6 field"),
        ("60 * * * *", "not a valid cron"),
        ("* 24 * * *", "not a valid cron"),
        ("R * * * *", "random"),
        ("H(0-5) * * * *", "hashed"),
        ("", "1-200"),
        ("@reboot", "field"),
        (None, "1-200"),
    ],
)
def test_invalid_crons(text: object, message: str) -> None:
    with pytest.raises(errors.InvalidCron, match=message):
        validate_cron(text)
