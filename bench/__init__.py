"""patchbay benchmarks: ``python -m bench [NAME...]`` prints one JSON object per line.

Each benchmark is an async function ``(url) -> list[dict]`` registered with
:func:`benchmark` in a module of this package listed in ``MODULES``; every dict it returns
is printed with ``"bench": NAME`` first. Figures use the names ``jobs_per_s``, ``p50_ms``,
``p95_ms``, ``p99_ms``, ``ratio`` and ``rss_mb`` where they apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

BenchFn = Callable[[str], Awaitable[list[dict[str, Any]]]]

REGISTRY: dict[str, BenchFn] = {}

# Modules whose benchmarks ``python -m bench`` knows, in the order they run.
MODULES = [
    "bench.queue_core",
    "bench.queue_control",
    "bench.connectors",
    "bench.runtime",
    "bench.secrets",
    "bench.webhooks",
]


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn`` as benchmark ``name``."""

    def register(fn: BenchFn) -> BenchFn:
        REGISTRY[name] = fn
        return fn

    return register
