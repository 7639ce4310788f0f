"""No exported span carries a secret: a connector resolves its token, sends it in a header
to a real local server, and raises an error containing it; the spans exported by the
OpenTelemetry SDK (in memory) hold neither the token nor its encodings."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from patchbay.connectors import (
    Connector,
    ConnectorConfig,
    ConnectorExecutor,
    JobContext,
    SecretField,
    sync,
)
from patchbay.queue import QueueClient
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key

TOKEN = "tok_live_Q8w2-Zx91LmN0pRs"

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing() -> Iterator[InMemorySpanExporter]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)  # once per process; later calls are ignored
    yield _EXPORTER


class LeakyConfig(ConnectorConfig):
    base_url: str
    token: SecretField


class Leaky(Connector[LeakyConfig]):
    name = "leaky"
    config_model = LeakyConfig

    @sync(every="*/5 * * * *")
    async def things(self, ctx: JobContext[LeakyConfig]) -> None:
        token = await ctx.secret(ctx.config.token)
        ctx.set_attribute("debug.auth", f"Bearer {token}")  # careless, on purpose
        response = await ctx.http.get(
            f"{ctx.config.base_url}/things", headers={"Authorization": f"Bearer {token}"}
        )
        raise RuntimeError(f"upstream refused token {token}: {response.text}")


@pytest.fixture
def upstream() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"error": f"bad {self.headers.get('Authorization')}"}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_no_exported_span_contains_the_token(
    database_url: str,
    schema: str,
    upstream: str,
    eventually: Eventually,
    tracing: InMemorySpanExporter,
) -> None:
    tracing.clear()
    keys = LocalKeyProvider([generate_master_key("k1")])
    async with Vault(database_url, schema=schema, keys=keys) as vault:
        await vault.put("acme", "leaky/token", TOKEN)
        async with QueueClient(database_url, schema=schema, redact=vault.redactor) as client:
            executor = ConnectorExecutor(client, [Leaky()], vault=vault, retry_limit=0)
            worker = (await executor.start(concurrency=1, poll_interval=0.05))[0]
            await executor.send_sync(
                "leaky",
                "things",
                tenant="acme",
                integration="acme-leaky",
                config={"base_url": upstream, "token": "secret://acme/leaky/token"},
            )
            await eventually(lambda: worker.failed == 1)
            await worker.drain()
    spans = tracing.get_finished_spans()
    assert any(s.name == "leaky.things run" for s in spans)
    assert any(s.name == "HTTP GET" for s in spans)
    exported = json.dumps([json.loads(s.to_json()) for s in spans])
    for leak in (TOKEN, base64.b64encode(TOKEN.encode()).decode()):
        assert leak not in exported
    run = next(s for s in spans if s.name == "leaky.things run")
    assert run.status.description is not None and "upstream refused token" in run.status.description
