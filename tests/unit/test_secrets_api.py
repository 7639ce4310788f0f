from __future__ import annotations

import inspect
import sys
from pathlib import Path

import patchbay.secrets as vault_api

EXPECTED = {
    "KEYS_ENV", "KEY_FILE_ENV", "MAX_VALUE_BYTES", "REDACTED", "CrossTenantReference",
    "DatabaseUnavailable", "DecryptionFailed", "InvalidInput", "InvalidMasterKey",
    "InvalidName", "InvalidOption", "InvalidReference", "InvalidValue", "KeyUnwrapFailed",
    "LocalKeyProvider", "MasterKey", "MasterKeyError", "MasterKeyProvider", "NoMasterKey",
    "RedactingFilter", "Redactor", "ResolutionCache", "RotationProgress", "RotationReport",
    "SchemaNotMigrated", "Secret", "SecretInfo", "SecretNotFound", "SecretRef",
    "SecretsError", "ShredReport", "StoredVersion", "TenantSecrets", "UnknownMasterKey",
    "Vault", "WrappedKey", "WrongMasterKey", "development_key_provider", "format_master_key",
    "format_ref", "generate_master_key", "install_log_redaction", "is_ref",
    "load_key_provider", "parse_master_keys", "parse_ref", "validate_secret_name",
    "validate_tenant",
}  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert set(vault_api.__all__) == EXPECTED
    for name in vault_api.__all__:
        assert hasattr(vault_api, name), name


def test_every_public_name_has_a_docstring() -> None:
    for name in vault_api.__all__:
        obj = getattr(vault_api, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else ():
                if not member_name.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{member_name}"


def test_errors_all_derive_from_secrets_error() -> None:
    from patchbay.secrets import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), vault_api.SecretsError)
        assert getattr(errors, name).__doc__


def test_secrets_never_shadows_the_standard_library() -> None:
    import secrets

    assert Path(secrets.__file__).parent == Path(inspect.getfile(inspect)).parent
    assert not any(Path(p, "secrets", "__init__.py").exists() for p in sys.path if p)
