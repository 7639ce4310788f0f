"""Configuration models: secret fields hold references, never values.

A connector's config model types its secret fields as :data:`SecretField`: the value must
be a ``secret://<tenant>/<name>`` reference, so integration configs, job rows and logs only
ever carry references. Handlers resolve them just in time with ``await ctx.secret(...)``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from patchbay.secrets import parse_ref

__all__ = ["ConnectorConfig", "SecretField", "config_schema", "secret_fields"]


def _check_ref(value: str) -> str:
    try:
        parse_ref(value)
    except Exception as exc:
        raise ValueError(
            "must be a secret reference like secret://<tenant>/<name>, not a value"
        ) from exc
    return value


#: A config field that holds a secret reference (validated), never the secret itself.
SecretField = Annotated[str, AfterValidator(_check_ref)]


class ConnectorConfig(BaseModel):
    """Base for connector config models: unknown fields are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def secret_fields(model: type[BaseModel]) -> list[str]:
    """Names of the model's fields typed as :data:`SecretField`."""
    found: list[str] = []
    for name, info in model.model_fields.items():
        if any(getattr(m, "func", None) is _check_ref for m in info.metadata):
            found.append(name)
    return found


def config_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, secret fields marked with ``"format": "secret-ref"``."""
    schema = model.model_json_schema()
    for name in secret_fields(model):
        schema.get("properties", {}).get(name, {})["format"] = "secret-ref"
    return schema
