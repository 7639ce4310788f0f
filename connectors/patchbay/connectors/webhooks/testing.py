"""A real HTTP receiver on localhost, for tests and benchmarks of webhook delivery.

    with Receiver() as receiver:
        receiver.respond(503, times=2)          # the next two requests get 503, then 200
        ... deliver to receiver.url ...
        assert receiver.requests[0].headers["webhook-id"]

It runs a small asyncio HTTP/1.1 server (keep-alive) in a background thread and records
every request. Webhooks to it need ``allowed_networks=["127.0.0.1/32"]`` (or
``allow_private_networks=True``): loopback is refused by default.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
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
    """An HTTP/1.1 server on ``127.0.0.1`` (a free port by default), run by an asyncio
    loop in a background thread, that records requests and answers as scripted (default:
    200 with an empty body). Keep-alive, ``Content-Length`` bodies; enough for webhooks and
    fast enough to benchmark against (thousands of requests a second)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[ReceivedRequest] = []
        self.default = ScriptedResponse()
        self._script: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (once started)."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Its URL, ``http://127.0.0.1:<port>/hook``."""
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

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    return
                method, target, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                answer = self._next(ReceivedRequest(method, target, headers, body, time.time()))
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                try:
                    phrase = HTTPStatus(answer.status).phrase
                except ValueError:
                    phrase = ""
                head = [f"HTTP/1.1 {answer.status} {phrase}"]
                head += [f"{k}: {v}" for k, v in answer.headers.items()]
                head.append(f"content-length: {len(answer.body)}")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    def start(self) -> Self:
        """Serve in a background thread; returns once listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, self._host, self._port, backlog=1024)
                )
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                # Open connections' handlers end before the loop closes.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(self._server.wait_closed())
                loop.close()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
