"""The redaction proof of the vault issue: a handler that raises an exception containing
its token, logs it and puts it in an HTTP header leaves no trace of it anywhere: not in a
job row, a job event, any other row of the schema, or a log line."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import Job, JobState, QueueClient
from patchbay.secrets import (
    REDACTED,
    LocalKeyProvider,
    RedactingFilter,
    Vault,
    generate_master_key,
    install_log_redaction,
)

TOKEN = "pat_live_Zq81xW-4v_Ny3Kd0"
LEAKS = {
    "raw": TOKEN,
    "base64": base64.b64encode(TOKEN.encode()).decode(),
    "basic": base64.b64encode(f"api:{TOKEN}".encode()).decode(),
    "url": urllib.parse.quote(TOKEN, safe=""),
}

log = logging.getLogger("tests.secrets.leaky_connector")


class Upstream:
    """A real HTTP peer that rejects every call, echoing the credential it got (as some
    APIs do in their error bodies)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.access_log: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.headers.append(dict(self.headers.items()))
                body = f"invalid credentials: {self.headers.get('Authorization')}".encode()
                self.send_response(401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                upstream.access_log.append(format % args)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/contacts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def call_upstream(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "X-Api-Key": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = log.level
    log.setLevel(logging.DEBUG)
    yield stream
    log.setLevel(level)
    root.removeHandler(handler)
    for h in root.handlers:
        for f in [f for f in h.filters if isinstance(f, RedactingFilter)]:
            h.removeFilter(f)


def everything_in(url: str, schema: str) -> dict[str, str]:
    """The text of every row of every table of the schema."""
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables"
                " where table_schema = %s and table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        return {
            table: "\n".join(
                str(r[0])
                for r in conn.execute(
                    sql.SQL("select t::text from {}.{} t").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                )
            )
            for table in tables
        }


def assert_clean(where: str, text: str) -> None:
    for form, leak in LEAKS.items():
        assert leak not in text, f"the token ({form}) leaked into {where}"


async def test_a_leaky_handler_leaves_no_trace_of_its_token(
    database_url: str,
    schema: str,
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = LocalKeyProvider([generate_master_key("k1")])
    async with Vault(database_url, schema=schema, keys=keys) as setup:
        await setup.put("acme", "crm/token", TOKEN)

    with Upstream() as upstream:
        async with QueueClient(database_url, schema=schema, maintenance_interval=0.2) as client:
            # The daemon's wiring: one vault on the client's pool, its redactor given to the
            # queue (job errors) and to every log handler.
            vault = Vault(pool=client.pool, schema=schema, keys=keys)
            client.redact = vault.redactor
            install_log_redaction(vault.redactor)

            last_attempt_over = asyncio.Event()

            async def leaky(job: Job) -> None:
                try:
                    await leak_everywhere(job)
                finally:
                    if job.attempt == 2:
                        last_attempt_over.set()

            async def leak_everywhere(job: Job) -> None:
                secrets = vault.for_tenant(job.data["tenant"])
                token = await secrets.resolve(job.data["auth"])
                log.info("calling %s with Authorization: Bearer %s", upstream.url, token)
                status, body = await asyncio.to_thread(call_upstream, upstream.url, token)
                log.warning("upstream answered %s: %s", status, body, extra={"token": token})
                try:
                    raise PermissionError(f"upstream said {status}: {body}")
                except PermissionError as exc:
                    log.exception("sync of %s failed", job.data["tenant"])
                    basic = base64.b64encode(f"api:{token}".encode()).decode()
                    raise RuntimeError(
                        f"sync failed with token {token!r} (Basic {basic}); "
                        f"retry {upstream.url}?key={urllib.parse.quote(token, safe='')}"
                    ) from exc

            await client.create_queue("crm.sync", retry_limit=1, events=True)
            job_id = await client.send(
                "crm.sync", {"tenant": "acme", "auth": "secret://acme/crm/token"}
            )
            worker = await client.work("crm.sync", leaky, poll_interval=0.05)
            await asyncio.wait_for(last_attempt_over.wait(), timeout=20)
            await worker.drain()
            job = await client.get_job(job_id)
            events = await client.job_events(job_id)

    # The handler really did put the token in a header, and really failed twice.
    assert upstream.headers and upstream.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert job.state is JobState.FAILED and job.attempt == 2
    assert job.error is not None
    assert REDACTED in job.error["message"] and REDACTED in job.error["traceback"]
    assert "PermissionError" in job.error["traceback"]  # the cause chain is kept, redacted
    assert events, "the queue records events: the failures are in the job-event log"

    assert_clean("the job record", repr(job))
    assert_clean("the job events", repr(events))
    for table, text in everything_in(database_url, schema).items():
        assert_clean(f"table {table}", text)
    logged = log_stream.getvalue()
    assert "Authorization: Bearer [REDACTED]" in logged and "Traceback" in logged
    assert_clean("the log lines", logged)
    assert_clean("pytest's captured log", caplog.text)
    assert_clean("the upstream's access log", "\n".join(upstream.access_log))
