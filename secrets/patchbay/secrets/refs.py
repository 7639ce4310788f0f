"""Secret references: ``secret://<tenant>/<name>[@<version>]``.

Jobs, integration configs and logs hold references, never values. A reference names its
tenant explicitly, so resolution can refuse one that names another tenant than the caller
acts for (see :meth:`patchbay.secrets.Vault.resolve`).

Grammar: the tenant is 1-100 characters of letters, digits and ``_ . -``, starting with a
letter or digit; the name is 1-200 characters of such segments joined by single ``/``
(``salesforce/oauth/refresh_token``), no segment ``.`` or ``..``; the optional version is a
positive decimal integer. Nothing needs escaping, so the text form is canonical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import InvalidName, InvalidReference

__all__ = [
    "REF_SCHEME",
    "SecretRef",
    "format_ref",
    "is_ref",
    "parse_ref",
    "validate_secret_name",
    "validate_tenant",
]

REF_SCHEME = "secret://"

_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_NAME_MAX = 200
_VERSION_MAX = 2**31 - 1
_REF = re.compile(r"secret://([^/@]*)/([^@]*)(?:@([^@]*))?")


def validate_tenant(tenant: object) -> str:
    """Return ``tenant`` if it is a valid tenant id, else raise :class:`InvalidName`."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise InvalidName(
            f"invalid tenant {_shown(tenant)}: use 1-100 characters of letters, digits and "
            "'_ . -', starting with a letter or digit"
        )
    return tenant


def validate_secret_name(name: object) -> str:
    """Return ``name`` if it is a valid secret name, else raise :class:`InvalidName`."""
    if (
        not isinstance(name, str)
        or len(name) > _NAME_MAX
        or not _NAME.fullmatch(name)
        or any(part in (".", "..") for part in name.split("/"))
    ):
        raise InvalidName(
            f"invalid secret name {_shown(name)}: use 1-200 characters of letters, digits "
            "and '_ . -', in segments joined by '/' (no empty, '.' or '..' segment)"
        )
    return name


def _shown(value: object) -> str:
    # Bad input is echoed in errors, but cut short: a value pasted by mistake into a name
    # field must not end up whole in a log line.
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "...(cut)"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed reference. ``version`` None means the latest version at resolution time."""

    tenant: str
    name: str
    version: int | None = None

    def __post_init__(self) -> None:
        validate_tenant(self.tenant)
        validate_secret_name(self.name)
        if self.version is not None and (
            isinstance(self.version, bool)
            or not isinstance(self.version, int)
            or not 1 <= self.version <= _VERSION_MAX
        ):
            raise InvalidReference(f"version must be a positive integer, got {self.version!r}")

    def __str__(self) -> str:
        return format_ref(self.tenant, self.name, self.version)

    def latest(self) -> SecretRef:
        """The same reference, unpinned."""
        return SecretRef(self.tenant, self.name)


def format_ref(tenant: str, name: str, version: int | None = None) -> str:
    """The text form ``secret://tenant/name[@version]`` (validates its parts)."""
    validate_tenant(tenant)
    validate_secret_name(name)
    suffix = "" if version is None else f"@{version}"
    return f"{REF_SCHEME}{tenant}/{name}{suffix}"


def is_ref(value: Any) -> bool:
    """True if ``value`` is a string that claims to be a reference (``secret://...``);
    it may still be malformed, which :func:`parse_ref` reports."""
    return isinstance(value, str) and value.startswith(REF_SCHEME)


def parse_ref(text: object) -> SecretRef:
    """Parse a reference; raises :class:`InvalidReference` saying what is wrong."""
    if isinstance(text, SecretRef):
        return text
    if not isinstance(text, str):
        raise InvalidReference(f"a secret reference is a string, got {type(text).__name__}")
    return _parse_text(text)


# Workers resolve the same few references over and over: parse each text once. (Errors
# are not cached; SecretRef is immutable, so sharing instances is safe.)
@lru_cache(maxsize=4096)
def _parse_text(text: str) -> SecretRef:
    shown = _shown(text)
    if not text.startswith(REF_SCHEME):
        raise InvalidReference(
            f"{shown} is not a secret reference: expected secret://<tenant>/<name>[@<version>]"
        )
    match = _REF.fullmatch(text)
    if match is None:
        raise InvalidReference(
            f"malformed secret reference {shown}: expected secret://<tenant>/<name>[@<version>]"
        )
    tenant, name, raw_version = match.groups()
    version: int | None = None
    if raw_version is not None:
        if not raw_version.isascii() or not raw_version.isdigit() or raw_version.startswith("0"):
            raise InvalidReference(
                f"malformed secret reference {shown}: the version after '@' must be a "
                "positive integer"
            )
        version = int(raw_version)
        if version > _VERSION_MAX:
            raise InvalidReference(f"malformed secret reference {shown}: version too large")
    try:
        return SecretRef(tenant, name, version)
    except InvalidName as exc:
        raise InvalidReference(f"malformed secret reference {shown}: {exc}") from exc
