"""patchbay.secrets: the vault. Encrypted, versioned credentials in Postgres, referenced by
jobs as ``secret://<tenant>/<name>[@version]`` and scrubbed from everything they touch.

async with Vault(url, keys=load_key_provider()) as vault:
    await vault.put("acme", "hubspot/token", token)
    acme = vault.for_tenant("acme")
    value = await acme.resolve("secret://acme/hubspot/token")   # registered for redaction
    client = QueueClient(url, redact=vault.redactor)

Usable on its own: it imports nothing else of patchbay.
"""

from .cache import ResolutionCache
from .errors import (
    CrossTenantReference,
    DatabaseUnavailable,
    DecryptionFailed,
    InvalidInput,
    InvalidMasterKey,
    InvalidName,
    InvalidOption,
    InvalidReference,
    InvalidValue,
    KeyUnwrapFailed,
    MasterKeyError,
    NoMasterKey,
    SchemaNotMigrated,
    SecretNotFound,
    SecretsError,
    UnknownMasterKey,
    WrongMasterKey,
)
from .keys import (
    KEY_FILE_ENV,
    KEYS_ENV,
    LocalKeyProvider,
    MasterKey,
    MasterKeyProvider,
    WrappedKey,
    development_key_provider,
    format_master_key,
    generate_master_key,
    load_key_provider,
    parse_master_keys,
)
from .models import (
    RotationProgress,
    RotationReport,
    Secret,
    SecretInfo,
    ShredReport,
    StoredVersion,
)
from .redact import REDACTED, RedactingFilter, Redactor, install_log_redaction
from .refs import SecretRef, format_ref, is_ref, parse_ref, validate_secret_name, validate_tenant
from .vault import MAX_VALUE_BYTES, TenantSecrets, Vault

__all__ = [
    "KEYS_ENV",
    "KEY_FILE_ENV",
    "MAX_VALUE_BYTES",
    "REDACTED",
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
    "LocalKeyProvider",
    "MasterKey",
    "MasterKeyError",
    "MasterKeyProvider",
    "NoMasterKey",
    "RedactingFilter",
    "Redactor",
    "ResolutionCache",
    "RotationProgress",
    "RotationReport",
    "SchemaNotMigrated",
    "Secret",
    "SecretInfo",
    "SecretNotFound",
    "SecretRef",
    "SecretsError",
    "ShredReport",
    "StoredVersion",
    "TenantSecrets",
    "UnknownMasterKey",
    "Vault",
    "WrappedKey",
    "WrongMasterKey",
    "development_key_provider",
    "format_master_key",
    "format_ref",
    "generate_master_key",
    "install_log_redaction",
    "is_ref",
    "load_key_provider",
    "parse_master_keys",
    "parse_ref",
    "validate_secret_name",
    "validate_tenant",
]
