"""Run what compose.yaml runs, as plain processes on this machine (no container engine).

Usage (from the repository root, in the project's virtual environment):
    python scripts/local_stack.py [--daemons 2] [--duration SECONDS]

compose.yaml's services and what stands in for each here:
- ``postgres``: ``$PATCHBAY_DATABASE_URL`` when set, else the embedded Postgres
  (``./.patchbay/postgres``), started once and shared by every process below;
- ``migrate``: ``patchbay migrate``, run once, before any daemon starts (as compose's
  ``service_completed_successfully`` dependency does);
- ``daemon-1`` .. ``daemon-N``: ``patchbay run`` processes on that one database. With
  ``PATCHBAY_MASTER_KEYS`` or ``PATCHBAY_MASTER_KEY_FILE`` set they run in production
  mode as in compose; otherwise in local development mode (``--dev``: one key file
  beside the embedded database, which all of them share);
- ``otel-collector`` and ``jaeger``: started only if their binaries (``otelcol`` /
  ``otelcol-contrib``, ``jaeger-all-in-one``) are on PATH; otherwise the daemons run
  without an exporter and the script says so.

Each process's output is printed with its name in front. Ctrl-C (or ``--duration``)
sends SIGTERM to the daemons, which drain gracefully; the exit code is non-zero when a
process failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
PATCHBAY = str(Path(sys.executable).parent / "patchbay")


def _pump(name: str, stream: IO[str]) -> None:
    for line in iter(stream.readline, ""):
        print(f"{name:<10}| {line.rstrip()}", flush=True)


def _start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    print(f"{'stack':<10}| starting {name}: {' '.join(command)}", flush=True)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    threading.Thread(target=_pump, args=(name, process.stdout), daemon=True).start()
    return process


def _database_url() -> str:
    url = os.environ.get("PATCHBAY_DATABASE_URL")
    if url:
        return url
    from patchbay.runtime.database import embedded_database_url

    return embedded_database_url()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=2, help="patchbay run processes")
    parser.add_argument("--duration", type=float, default=None, help="stop after seconds")
    args = parser.parse_args(argv)
    if not 1 <= args.daemons <= 32:
        parser.error("--daemons must be 1-32")

    env = dict(os.environ, PATCHBAY_DATABASE_URL=_database_url())
    production = bool(env.get("PATCHBAY_MASTER_KEYS") or env.get("PATCHBAY_MASTER_KEY_FILE"))
    helpers: list[subprocess.Popen[str]] = []
    collector = shutil.which("otelcol-contrib") or shutil.which("otelcol")
    viewer = shutil.which("jaeger-all-in-one")
    if viewer:
        helpers.append(_start("jaeger", [viewer], env))
    if collector and (REPO / "deploy" / "otel-collector.yaml").exists():
        config = str(REPO / "deploy" / "otel-collector.yaml")
        helpers.append(_start("collector", [collector, "--config", config], env))
    else:
        print(
            f"{'stack':<10}| no OpenTelemetry collector binary on PATH: daemons run without "
            "an exporter (compose.yaml runs one)",
            flush=True,
        )

    migrate = subprocess.run([PATCHBAY, "migrate"], cwd=REPO, env=env, text=True)
    if migrate.returncode != 0:
        print(f"{'stack':<10}| migrate failed (exit {migrate.returncode})", flush=True)
        return migrate.returncode
    run = [PATCHBAY, "run"] + ([] if production else ["--dev"])
    daemons = [_start(f"daemon-{n}", run, env) for n in range(1, args.daemons + 1)]

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stopping.is_set() and all(d.poll() is None for d in daemons):
        if deadline is not None and time.monotonic() >= deadline:
            break
        stopping.wait(0.2)

    print(f"{'stack':<10}| stopping: SIGTERM to every daemon", flush=True)
    for process in daemons + helpers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = [process.wait(timeout=60) for process in daemons]
    for process in helpers:
        process.wait(timeout=30)
    for n, code in enumerate(codes, start=1):
        print(f"{'stack':<10}| daemon-{n} exited {code}", flush=True)
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
