"""Finding connectors: the ``patchbay.connectors`` entry-point group, or ``module:Class``."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from .connector import Connector
from .errors import ConnectorNotFound, InvalidConnector

__all__ = ["ENTRY_POINT_GROUP", "discover", "load_connector"]

ENTRY_POINT_GROUP = "patchbay.connectors"


def _check(obj: Any, origin: str) -> type[Connector[Any]]:
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise InvalidConnector(f"{origin} is not a Connector subclass")
    obj.validate_class()
    return obj


def discover() -> dict[str, type[Connector[Any]]]:
    """Every installed connector class, by connector name. A plugin that fails to load
    raises InvalidConnector naming it (a broken plugin is not silently skipped)."""
    found: dict[str, type[Connector[Any]]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as exc:
            raise InvalidConnector(
                f"connector plugin {point.name!r} ({point.value}) failed to load: {exc}"
            ) from exc
        cls = _check(loaded, f"entry point {point.name!r} ({point.value})")
        if cls.name in found and found[cls.name] is not cls:
            raise InvalidConnector(f"two plugins declare connector {cls.name!r}")
        found[cls.name] = cls
    return found


def load_connector(spec: str) -> type[Connector[Any]]:
    """A connector class from ``module:Class``, or an installed connector's name."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConnectorNotFound(f"cannot import {module_name!r}: {exc}") from exc
        return _check(getattr(module, attr, None), spec)
    installed = discover()
    if spec not in installed:
        known = ", ".join(sorted(installed)) or "none installed"
        raise ConnectorNotFound(f"no connector named {spec!r} ({known})")
    return installed[spec]
