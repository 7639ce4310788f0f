"""Where the database is: ``PATCHBAY_DATABASE_URL``, else a real embedded Postgres.

The embedded Postgres (the ``pgserver`` package) lives in ``$PATCHBAY_HOME/postgres``
(default ``./.patchbay/postgres``), is created on first use, kept running between runs
and reused, so a newcomer needs no set-up. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from patchbay.queue import DatabaseUnavailable

__all__ = ["data_home", "embedded_database_url", "resolve_database_url"]

log = logging.getLogger("patchbay.runtime.database")

DATABASE_URL_ENV = "PATCHBAY_DATABASE_URL"
HOME_ENV = "PATCHBAY_HOME"


def data_home() -> Path:
    """patchbay's local data folder (embedded database, development key file)."""
    return Path(os.environ.get(HOME_ENV) or ".patchbay").resolve()


def embedded_database_url(folder: Path | None = None, *, announce: bool = True) -> str:
    """Start (or reuse) the embedded Postgres in ``folder`` and return its URL."""
    folder = (folder or data_home() / "postgres").resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver

            server = pgserver.get_server(folder, cleanup_mode=None)
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded Postgres in {folder}: {exc}. "
            f"Set {DATABASE_URL_ENV} to use an existing Postgres instead."
        ) from exc
    url = str(server.get_uri())
    if announce:
        print(f"patchbay: using the embedded Postgres in {folder}", file=sys.stderr)
    return url


def resolve_database_url(explicit: str | None = None, *, announce: bool = True) -> str:
    """The URL to use: ``explicit``, else ``$PATCHBAY_DATABASE_URL``, else embedded."""
    url = explicit or os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return embedded_database_url(announce=announce)
