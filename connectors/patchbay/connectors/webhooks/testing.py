"""A real HTTP receiver on localhost, for tests and benchmarks of webhook delivery.

    with Receiver() as receiver:
        receiver.respond(503, times=2)          # the next two requests get 503, then 200
        ... deliver to receiver.url ...
        assert receiver.requests[0].headers["webhook-id"]

It runs ``http.server`` (HTTP/1.1, keep-alive) in a background thread and records every
request. Webhooks to it need ``allowed_networks=["127.0.0.1/32"]`` (or
``allow_private_networks=True``): loopback is refused by default.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

__all__ = ["ReceivedRequest", "Receiver", "ScriptedResponse"]


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the receiver saw it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """An answer the receiver gives: status, headers, body, after ``delay`` seconds."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class Receiver:
    """A threaded HTTP server on ``127.0.0.1`` (a free port by default) that records
    requests and answers as scripted (default: 200 with an empty body)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[ReceivedRequest] = []
        self.default = ScriptedResponse()
        self._script: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Its base URL, ``http://127.0.0.1:<port>/hook``."""
        return f"http://127.0.0.1:{self.port}/hook"

    def respond(
        self,
        status: int = 200,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests so (after those scripted before)."""
        answer = ScriptedResponse(status, dict(headers or {}), body, delay)
        with self._lock:
            self._script.extend([answer] * times)

    def count(self) -> int:
        """Requests received so far."""
        return len(self.requests)

    def _next(self, request: ReceivedRequest) -> ScriptedResponse:
        with self._lock:
            self.requests.append(request)
            return self._script.popleft() if self._script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = ReceivedRequest(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.time(),
                )
                answer = receiver._next(request)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                if answer.body:
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    def start(self) -> Self:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="webhook-receiver", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
