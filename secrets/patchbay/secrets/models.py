"""What the vault hands back. Values only ever appear in :class:`Secret`, whose ``repr``
hides them; everything else is metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .refs import SecretRef

__all__ = [
    "RotationProgress",
    "RotationReport",
    "Secret",
    "SecretInfo",
    "ShredReport",
    "StoredVersion",
]


@dataclass(frozen=True, slots=True)
class Secret:
    """A decrypted secret version. ``value`` is left out of ``repr`` and ``str``."""

    tenant: str
    name: str
    version: int
    created_at: datetime
    value: str = field(repr=False)

    @property
    def ref(self) -> SecretRef:
        """The pinned reference of this version."""
        return SecretRef(self.tenant, self.name, self.version)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What ``put`` returns: the version it created (no value)."""

    tenant: str
    name: str
    version: int
    created_at: datetime
    pruned: int = 0
    """Old versions deleted by the retention limit in the same transaction."""

    @property
    def ref(self) -> SecretRef:
        """The pinned reference of this version."""
        return SecretRef(self.tenant, self.name, self.version)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "ref": str(self.ref),
            "created_at": self.created_at.isoformat(),
            "pruned": self.pruned,
        }


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret's metadata: its versions (oldest first) and dates; never its value."""

    tenant: str
    name: str
    versions: tuple[int, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def latest_version(self) -> int | None:
        """The version an unpinned reference resolves to."""
        return self.versions[-1] if self.versions else None

    @property
    def ref(self) -> SecretRef:
        """The unpinned reference."""
        return SecretRef(self.tenant, self.name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "ref": str(self.ref),
            "versions": list(self.versions),
            "latest_version": self.latest_version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class RotationProgress:
    """Reported after each committed batch of a master-key rotation."""

    target_key_id: str
    done: int
    total: int
    failed: int


@dataclass(frozen=True, slots=True)
class RotationReport:
    """The outcome of :meth:`Vault.rotate_master_key`.

    ``rewrapped`` data keys were re-wrapped by this call; ``remaining`` are still wrapped by
    another key after it (those that ``failed``, or that another rotation held locked);
    ``usage`` counts data keys per master key id at the end.
    """

    target_key_id: str
    rewrapped: int
    remaining: int
    failed: tuple[tuple[str, str], ...]
    usage: dict[str, int]

    @property
    def complete(self) -> bool:
        """True when every data key is wrapped by the target key."""
        return self.remaining == 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "target_key_id": self.target_key_id,
            "rewrapped": self.rewrapped,
            "remaining": self.remaining,
            "complete": self.complete,
            "failed": [{"tenant": t, "error": e} for t, e in self.failed],
            "usage": dict(self.usage),
        }


@dataclass(frozen=True, slots=True)
class ShredReport:
    """What :meth:`Vault.shred_tenant` destroyed."""

    tenant: str
    data_keys: int
    secrets: int
    versions: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "tenant": self.tenant,
            "data_keys": self.data_keys,
            "secrets": self.secrets,
            "versions": self.versions,
        }
