"""The ``patchbay`` sub-command groups."""

from __future__ import annotations

import argparse
from typing import Any

from . import (
    connectors,
    integrations,
    jobs,
    migrate,
    queues,
    run,
    schedules,
    secrets,
    tenants,
    webhooks,
)

__all__ = ["register_all"]

GROUPS = (
    migrate,
    queues,
    jobs,
    run,
    secrets,
    schedules,
    connectors,
    webhooks,
    tenants,
    integrations,
)


def register_all(sub: argparse._SubParsersAction[Any]) -> None:
    """Add every group's sub-commands to the parser."""
    for group in GROUPS:
        group.register(sub)
