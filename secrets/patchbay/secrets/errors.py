"""Errors raised by ``patchbay.secrets``.

Every error the vault raises derives from :class:`SecretsError`, so callers can catch the
whole room at once. No error message ever holds a secret value::

    SecretsError
    ├── DatabaseUnavailable      the database could not be reached
    ├── SchemaNotMigrated        the vault's tables are missing: run ``patchbay migrate``
    ├── InvalidInput             bad input; nothing was written
    │   ├── InvalidName          a tenant or secret name that is not allowed
    │   ├── InvalidReference     a malformed ``secret://`` reference
    │   ├── InvalidValue         a value that cannot be stored (empty, too large, not text)
    │   └── InvalidOption        an unknown setting, or a value out of range
    ├── MasterKeyError           master-key configuration or use failed
    │   ├── NoMasterKey          no master key is configured
    │   ├── InvalidMasterKey     a configured key is malformed (id, length, encoding)
    │   ├── UnknownMasterKey     data was wrapped by a key id that is not configured
    │   ├── WrongMasterKey       a key id is configured with other key material
    │   └── KeyUnwrapFailed      (from a key provider) a wrapped key did not authenticate
    ├── DecryptionFailed         ciphertext failed authentication (altered, or moved rows)
    ├── SecretNotFound           no such secret or version
    └── CrossTenantReference     a reference names another tenant than the caller's
"""

from __future__ import annotations

__all__ = [
    "CrossTenantReference",
    "DatabaseUnavailable",
    "DecryptionFailed",
    "InvalidInput",
    "InvalidMasterKey",
    "InvalidName",
    "InvalidOption",
    "InvalidReference",
    "InvalidValue",
    "KeyUnwrapFailed",
    "MasterKeyError",
    "NoMasterKey",
    "SchemaNotMigrated",
    "SecretNotFound",
    "SecretsError",
    "UnknownMasterKey",
    "WrongMasterKey",
]


class SecretsError(Exception):
    """Base class of every error raised by ``patchbay.secrets``."""


class DatabaseUnavailable(SecretsError):
    """The database could not be reached. Check ``PATCHBAY_DATABASE_URL``."""


class SchemaNotMigrated(SecretsError):
    """The vault's tables do not exist in the schema. Run ``patchbay migrate`` first."""


class InvalidInput(SecretsError, ValueError):
    """The call's input is invalid. Nothing was written; correct the input and call again."""


class InvalidName(InvalidInput):
    """A tenant is 1-100 characters of letters, digits and ``_ . -``; a secret name is
    1-200 characters of such segments joined by ``/``."""


class InvalidReference(InvalidInput):
    """A reference must look like ``secret://<tenant>/<name>`` or
    ``secret://<tenant>/<name>@<version>``, version a positive integer."""


class InvalidValue(InvalidInput):
    """A secret value must be a non-empty string, at most 64 KiB once UTF-8 encoded."""


class InvalidOption(InvalidInput):
    """A setting is unknown or its value is out of range; the message names it."""


class MasterKeyError(SecretsError):
    """A master key is missing, malformed, unknown or wrong; the message says which."""


class NoMasterKey(MasterKeyError):
    """No master key is configured, so nothing can be encrypted or decrypted. Set
    ``PATCHBAY_MASTER_KEYS`` (``id:base64-key``, newest first) or
    ``PATCHBAY_MASTER_KEY_FILE``; ``patchbay secrets new-master-key`` makes one."""


class InvalidMasterKey(MasterKeyError, ValueError):
    """A configured master key is malformed: each is ``<id>:<base64 of 32 bytes>``, the id
    1-64 characters of letters, digits and ``_ . -``, no id twice."""


class UnknownMasterKey(MasterKeyError, LookupError):
    """Data is wrapped by a master key id that is not configured. Add that key back to the
    configuration (keep old keys until ``rotate-master-key`` has re-wrapped everything)."""


class WrongMasterKey(MasterKeyError):
    """The key configured under an id is not the key that id had when data was wrapped.
    Restore the original key material for that id; never reuse an id for a new key."""


class KeyUnwrapFailed(MasterKeyError):
    """Raised by a key provider when a wrapped key fails authentication under the named
    key: other key material for that id, or altered bytes. The vault turns it into
    :class:`WrongMasterKey` or :class:`DecryptionFailed` after comparing fingerprints."""


class DecryptionFailed(SecretsError):
    """Stored ciphertext failed authentication: it was altered, or copied from another row,
    tenant or version. The value cannot be recovered from it; put the secret again."""


class SecretNotFound(SecretsError, LookupError):
    """No secret (or no such version) exists for that tenant and name. Store it with
    ``patchbay secrets put``; old versions may have been pruned by the retention limit."""


class CrossTenantReference(SecretsError, PermissionError):
    """A reference names a tenant other than the one the caller acts for. A tenant can only
    resolve its own secrets; fix the reference in the integration's configuration."""
