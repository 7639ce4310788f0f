"""``python -m bench [NAME...]``: run all (or the named) benchmarks, print JSON lines.

Database: ``$PATCHBAY_DATABASE_URL``, else the embedded Postgres. Each benchmark uses a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import platform
import sys
import time

from bench import MODULES, REGISTRY
from patchbay.runtime.database import resolve_database_url


def main(argv: list[str]) -> int:
    for module in MODULES:
        importlib.import_module(module)
    names = argv or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}",
            file=sys.stderr,
        )
        return 2
    url = resolve_database_url()
    for name in names:
        started = time.perf_counter()
        results = asyncio.run(REGISTRY[name](url))
        for figures in results:
            line = {
                "bench": name,
                **figures,
                "wall_s": round(time.perf_counter() - started, 2),
                "machine": f"{platform.node()} {platform.machine()}",
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
