"""Secret vault benchmarks: ``secret_resolve``, resolutions per second, cold and cached.

``cold``: the resolution cache is off, so every resolution reads its row from Postgres
(one indexed select joining the tenant's data key) and decrypts it (AES-256-GCM; the
unwrapped data key stays in memory, as in a running daemon). Run one at a time (latency)
and from many tasks at once (throughput over a small pool). ``cached``: repeated
resolutions served from the in-memory cache, the steady state of a worker whose jobs keep
using the same credentials.

A schema of its own (``bench_secrets_<pid>``) is migrated and dropped at the end. Sizes
can be changed through ``PATCHBAY_BENCH_SECRETS_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from bench import benchmark
from patchbay.queue import migrate_sync
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key


def _int(name: str, default: int) -> int:
    return int(os.environ.get(f"PATCHBAY_BENCH_SECRETS_{name}", str(default)))


TENANTS = _int("TENANTS", 20)
NAMES_PER_TENANT = _int("NAMES", 10)
COLD_RESOLUTIONS = _int("COLD", 3_000)
COLD_CONCURRENCY = _int("CONCURRENCY", 16)
CACHED_RESOLUTIONS = _int("CACHED", 200_000)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 4),
        "p95_ms": round(cuts[94] * 1000, 4),
        "p99_ms": round(cuts[98] * 1000, 4),
    }


async def _sequential(vault: Vault, refs: list[tuple[str, str]], count: int) -> dict[str, Any]:
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        tenant, ref = refs[i % len(refs)]
        t0 = time.perf_counter()
        await vault.resolve(ref, tenant=tenant)
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {"resolutions_per_s": round(count / elapsed, 1), **_percentiles(samples)}


async def _concurrent(
    vault: Vault, refs: list[tuple[str, str]], count: int, tasks: int
) -> dict[str, Any]:
    per_task = count // tasks

    async def run(offset: int) -> None:
        for i in range(per_task):
            tenant, ref = refs[(offset + i * tasks) % len(refs)]
            await vault.resolve(ref, tenant=tenant)

    started = time.perf_counter()
    await asyncio.gather(*(run(t) for t in range(tasks)))
    elapsed = time.perf_counter() - started
    return {"resolutions_per_s": round(per_task * tasks / elapsed, 1)}


@benchmark("secret_resolve")
async def secret_resolve(url: str) -> list[dict[str, Any]]:
    """Resolutions per second, cold (database + decryption) and cached (memory)."""
    schema = f"bench_secrets_{os.getpid()}"
    migrate_sync(url, schema)
    keys = LocalKeyProvider([generate_master_key("bench")])
    refs: list[tuple[str, str]] = []
    try:
        async with Vault(url, schema=schema, keys=keys, pool_max=COLD_CONCURRENCY) as setup:
            for t in range(TENANTS):
                tenant = f"tenant-{t:04d}"
                for n in range(NAMES_PER_TENANT):
                    name = f"crm/token-{n}"
                    await setup.put(tenant, name, f"tok_{t}_{n}_" + "x" * 40)
                    refs.append((tenant, f"secret://{tenant}/{name}"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("vacuum analyze {}.secret_version").format(sql.Identifier(schema)))
        common = {"secrets": len(refs), "tenants": TENANTS}
        results: list[dict[str, Any]] = []
        async with Vault(
            url, schema=schema, keys=keys, cache_ttl=0, pool_min=COLD_CONCURRENCY,
            pool_max=COLD_CONCURRENCY,
        ) as cold:  # fmt: skip
            await _sequential(cold, refs, min(200, COLD_RESOLUTIONS))  # warm pool, prepare
            sequential = await _sequential(cold, refs, COLD_RESOLUTIONS)
            results.append({"mode": "cold", "concurrency": 1, **sequential, **common})
            parallel = await _concurrent(cold, refs, COLD_RESOLUTIONS, COLD_CONCURRENCY)
            results.append({"mode": "cold", "concurrency": COLD_CONCURRENCY, **parallel, **common})
        async with Vault(url, schema=schema, keys=keys, cache_ttl=3600) as cached:
            for tenant, ref in refs:
                await cached.resolve(ref, tenant=tenant)
            warm = await _sequential(cached, refs, CACHED_RESOLUTIONS)
            results.append(
                {
                    "mode": "cached",
                    "concurrency": 1,
                    **warm,
                    **common,
                    "ratio": round(warm["resolutions_per_s"] / sequential["resolutions_per_s"], 1),
                }
            )
        return results
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
