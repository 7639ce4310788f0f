"""Fixtures of the reliability suite: figures reported as JSON lines, a work folder for the
worker processes' run logs, and a throwaway Postgres cluster for the tests that stop it.

Each test calls ``report(**figures)`` once, before asserting its bar: the line is printed
(see it with ``-s``), attached to the test's report (listed at the end of the run, also
under pytest-xdist, when ``tests/reliability`` is on the command line) and appended to
``$PATCHBAY_RELIABILITY_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import SIZE, PgCluster, new_schema

Report = Callable[..., None]

_KEY = "reliability_figures"


@pytest.fixture
def report(request: pytest.FixtureRequest, record_property: Callable[[str, Any], None]) -> Report:
    """``report(**figures)``: publish the test's figures as one JSON line."""

    def emit(**figures: Any) -> None:
        line = json.dumps({"test": request.node.name, "size": SIZE, **figures}, default=str)
        print(line, flush=True)
        record_property(_KEY, line)
        target = os.environ.get("PATCHBAY_RELIABILITY_REPORT")
        if target:
            with open(target, "a") as f:
                f.write(line + "\n")

    return emit


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for rep in reports
        if getattr(rep, "when", None) == "call"
        for key, value in getattr(rep, "user_properties", ())
        if key == _KEY
    ]
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder for the worker processes' run logs, status files and logs (kept when
    ``PATCHBAY_RELIABILITY_KEEP`` is set)."""
    path = Path(tempfile.mkdtemp(prefix="patchbay-rel-"))
    yield path
    if os.environ.get("PATCHBAY_RELIABILITY_KEEP"):
        print(f"work folder kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """A started throwaway Postgres cluster, destroyed after the test."""
    try:
        pg = PgCluster()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot create a throwaway Postgres cluster: {exc}")
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def cluster_schema(cluster: PgCluster) -> Iterator[str]:
    """A migrated schema in the throwaway cluster."""
    name = new_schema(cluster.url)
    yield name
    # The cluster goes away with the test; nothing else to drop.
