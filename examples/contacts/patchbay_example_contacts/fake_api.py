"""A fake of the sample contacts API: a real HTTP server on 127.0.0.1, for tests and demos.

Start it from Python::

    with FakeContactsApi(contacts=250, tokens={"demo-token"}) as api:
        print(api.url)                  # http://127.0.0.1:<port>
        api.fail(429, retry_after=1)    # the next API request answers 429, Retry-After: 1
        api.revoke("demo-token")        # from now on, that token gets 401

or from a shell (prints its URL on the first line of stdout, then serves until Ctrl-C)::

    python -m patchbay_example_contacts.fake_api --port 0 --contacts 250 --token demo-token

The API it fakes (all JSON, ``Authorization: Bearer <token>`` on every ``/v1`` call):

``GET /v1/me``
    ``{"account": ..., "plan": ...}``: what ``check()`` calls to test a token.
``GET /v1/contacts``
    Contacts sorted by ``(updated_at, id)``, a page at a time:
    ``{"data": [...], "next_cursor": "..." | null}``. Query parameters: ``limit`` (page
    size, capped at ``max_page_size``), ``cursor`` (from the previous page),
    ``updated_since`` (``>=``), ``updated_before`` (``<``), and ``updated_after`` (``>``)
    with an optional ``after_id``: then only contacts after the position
    ``(updated_after, after_id)`` in that order, which is how a client resumes exactly
    where it stopped, even among contacts sharing one ``updated_at``.

Failures: 401 for a missing, unknown or revoked token; 429 with ``Retry-After`` when a
scripted failure says so or the optional rate limit (``rate_limit=(requests, seconds)``,
a fixed window) is exceeded; any status scripted with :meth:`FakeContactsApi.fail`.

The switches are also reachable over HTTP, for a demo in another process (no auth, not
counted): ``POST /_admin/fail`` with ``{"status": 429, "times": 1, "retry_after": 2}``,
``POST /_admin/revoke`` / ``POST /_admin/grant`` with ``{"token": ...}``, ``POST
/_admin/contacts`` with ``{"count": 5}`` (new contacts, updated now), ``GET /_admin/stats``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeContactsApi", "RequestRecord", "format_time", "main", "parse_time"]

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
_COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell"]


def format_time(moment: datetime) -> str:
    """The API's timestamp format: UTC, milliseconds, ``Z`` (``2024-01-01T00:00:00.000Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` or an offset); naive ones are taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the fake answered: method, path, query (first value of each parameter),
    the status it answered, whether it carried a bearer token, and when
    (the server's ``clock``, default ``time.monotonic``)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    authorized: bool
    at: float


@dataclass(slots=True)
class _Failure:
    status: int
    times: int
    after: int
    retry_after: float | None
    path_prefix: str


@dataclass(slots=True)
class _Window:
    started: float = 0.0
    used: int = 0
    limit: tuple[int, float] | None = None


class _BadRequest(Exception):
    pass


@dataclass(slots=True)
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeContactsApi:
    """The fake API server. ``contacts`` contacts are generated with ``updated_at`` spread
    evenly over ``spread`` from ``start`` (deterministic for a given ``seed``).

    Settings: ``tokens`` accepted (default ``{"test-token"}``); ``page_size`` when a
    request gives no ``limit`` (default 50) and ``max_page_size`` (default 200);
    ``rate_limit`` = ``(requests, seconds)``, a fixed window shared by all callers
    (default None: unlimited); ``port`` (default 0: any free port); ``clock``, monotonic
    seconds for the rate limit's window and the log (tests pass a fake).

    Counters: ``requests`` (``/v1`` requests), ``statuses`` (a Counter of answered
    statuses), ``log`` (every ``/v1`` :class:`RequestRecord`, in order).
    """

    def __init__(
        self,
        *,
        contacts: int = 0,
        tokens: set[str] | frozenset[str] | None = None,
        start: datetime = DEFAULT_START,
        spread: timedelta = timedelta(days=30),
        page_size: int = 50,
        max_page_size: int = 200,
        rate_limit: tuple[int, float] | None = None,
        seed: int = 7,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.page_size = page_size
        self.clock = clock
        self.max_page_size = max_page_size
        self._lock = threading.Lock()
        self._tokens = set(tokens if tokens is not None else {"test-token"})
        self._revoked: set[str] = set()
        self._failures: list[_Failure] = []
        self._window = _Window(limit=rate_limit)
        self._contacts: dict[str, dict[str, Any]] = {}
        self._random = random.Random(seed)
        self._next_id = 1
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.log: list[RequestRecord] = []
        if contacts:
            step = spread / contacts
            for index in range(contacts):
                self._new_contact(start + index * step)
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Serve in a background thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
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

    # -- data ------------------------------------------------------------------------------

    def _new_contact(self, updated_at: datetime) -> dict[str, Any]:
        number = self._next_id
        self._next_id += 1
        first, last = self._random.choice(_FIRST), self._random.choice(_LAST)
        company = self._random.choice(_COMPANIES)
        contact = {
            "id": f"c_{number:06d}",
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}.{number}@{company.lower()}.example",
            "company": company,
            "created_at": format_time(updated_at - timedelta(days=self._random.randint(0, 90))),
            "updated_at": format_time(updated_at),
        }
        self._contacts[contact["id"]] = contact
        return contact

    def add_contacts(
        self, count: int, *, updated_at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Create ``count`` contacts updated at ``updated_at`` (default: now); returns them."""
        moment = updated_at or datetime.now(UTC)
        with self._lock:
            return [dict(self._new_contact(moment)) for _ in range(count)]

    def touch(self, ids: list[str], *, updated_at: datetime | None = None) -> None:
        """Mark contacts as changed: a new ``updated_at`` (default: now) and a new phone."""
        moment = format_time(updated_at or datetime.now(UTC))
        with self._lock:
            for contact_id in ids:
                contact = self._contacts[contact_id]
                contact["updated_at"] = moment
                contact["phone"] = f"+1-555-{self._random.randint(0, 9999):04d}"

    def contacts(self) -> list[dict[str, Any]]:
        """Every contact, in the API's order (a copy)."""
        with self._lock:
            return [dict(c) for c in self._sorted()]

    def _sorted(self) -> list[dict[str, Any]]:
        return sorted(self._contacts.values(), key=lambda c: (parse_time(c["updated_at"]), c["id"]))

    # -- switches --------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        after: int = 0,
        retry_after: float | None = None,
        path_prefix: str = "/v1/",
    ) -> None:
        """Answer ``status`` to the next ``times`` requests under ``path_prefix``, after
        letting ``after`` of them through. ``retry_after`` adds a Retry-After header
        (seconds, rounded up: the header takes whole seconds). Failures queue up in order."""
        with self._lock:
            self._failures.append(_Failure(status, times, after, retry_after, path_prefix))

    def revoke(self, token: str) -> None:
        """From now on ``token`` gets 401."""
        with self._lock:
            self._revoked.add(token)

    def grant(self, token: str) -> None:
        """Accept ``token`` (again)."""
        with self._lock:
            self._tokens.add(token)
            self._revoked.discard(token)

    def set_rate_limit(self, limit: tuple[int, float] | None) -> None:
        """Allow ``requests`` per ``seconds`` (a fixed window), or None for no limit."""
        with self._lock:
            self._window = _Window(limit=limit)

    def reset_counters(self) -> None:
        """Zero ``requests``, ``statuses`` and ``log``."""
        with self._lock:
            self.requests = 0
            self.statuses.clear()
            self.log.clear()

    def stats(self) -> dict[str, Any]:
        """Counters as JSON: requests, statuses, contacts."""
        with self._lock:
            return {
                "requests": self.requests,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "contacts": len(self._contacts),
            }

    # -- answering -------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Answer:
        """Answer one request (called by the server's handler threads)."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith("/_admin/"):
            return self._admin(method, path, body)
        token = _bearer(headers.get("authorization", ""))
        with self._lock:
            answer = self._answer_api(method, path, query, token)
            self.requests += 1
            self.statuses[answer.status] += 1
            self.log.append(
                RequestRecord(method, path, query, answer.status, token is not None, self.clock())
            )
        return answer

    def _answer_api(
        self, method: str, path: str, query: dict[str, str], token: str | None
    ) -> _Answer:
        scripted = self._scripted_failure(path)
        if scripted is not None:
            return scripted
        limited = self._rate_limited()
        if limited is not None:
            return limited
        if token is None or token not in self._tokens or token in self._revoked:
            reason = "token revoked" if token in self._revoked else "missing or unknown token"
            return _Answer(
                401,
                {"error": "invalid_token", "message": reason},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if method != "GET":
            return _Answer(405, {"error": "method_not_allowed"}, {"Allow": "GET"})
        if path == "/v1/me":
            return _Answer(200, {"account": "Example Co", "plan": "sandbox"})
        if path == "/v1/contacts":
            try:
                return _Answer(200, self._list(query))
            except _BadRequest as exc:
                return _Answer(400, {"error": "bad_request", "message": str(exc)})
        return _Answer(404, {"error": "not_found", "message": f"no route {path}"})

    def _scripted_failure(self, path: str) -> _Answer | None:
        for failure in self._failures:
            if not path.startswith(failure.path_prefix):
                continue
            if failure.after > 0:
                failure.after -= 1
                return None
            failure.times -= 1
            if failure.times <= 0:
                self._failures.remove(failure)
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(math.ceil(failure.retry_after))
            return _Answer(failure.status, {"error": f"scripted {failure.status}"}, headers)
        return None

    def _rate_limited(self) -> _Answer | None:
        window = self._window
        if window.limit is None:
            return None
        capacity, seconds = window.limit
        now = self.clock()
        if now - window.started >= seconds:
            window.started, window.used = now, 0
        if window.used < capacity:
            window.used += 1
            return None
        wait = max(1, math.ceil(window.started + seconds - now))
        return _Answer(429, {"error": "rate_limited"}, {"Retry-After": str(wait)})

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        try:
            limit = int(query.get("limit") or self.page_size)
        except ValueError:
            raise _BadRequest("limit must be an integer") from None
        if limit < 1:
            raise _BadRequest("limit must be at least 1")
        limit = min(limit, self.max_page_size)
        since = _time_param(query, "updated_since")
        before = _time_param(query, "updated_before")
        after = _time_param(query, "updated_after")
        after_id = query.get("after_id")
        if after_id is not None and after is None:
            raise _BadRequest("after_id needs updated_after")
        position: tuple[datetime, str] | None = None
        if "cursor" in query:
            position = _decode_cursor(query["cursor"])
        selected: list[dict[str, Any]] = []
        for contact in self._sorted():
            key = (parse_time(contact["updated_at"]), contact["id"])
            if since is not None and key[0] < since:
                continue
            if before is not None and key[0] >= before:
                continue
            if after is not None and (key <= (after, after_id) if after_id else key[0] <= after):
                continue
            if position is not None and key <= position:
                continue
            selected.append(contact)
            if len(selected) > limit:
                break
        page, more = selected[:limit], len(selected) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = _encode_cursor(parse_time(last["updated_at"]), last["id"])
        return {"data": [dict(c) for c in page], "next_cursor": next_cursor}

    def _admin(self, method: str, path: str, body: bytes) -> _Answer:
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return _Answer(400, {"error": "body must be JSON"})
        if method == "GET" and path == "/_admin/stats":
            return _Answer(200, self.stats())
        if method != "POST":
            return _Answer(405, {"error": "method_not_allowed"})
        try:
            if path == "/_admin/fail":
                self.fail(
                    int(doc["status"]),
                    times=int(doc.get("times", 1)),
                    after=int(doc.get("after", 0)),
                    retry_after=doc.get("retry_after"),
                )
            elif path == "/_admin/revoke":
                self.revoke(str(doc["token"]))
            elif path == "/_admin/grant":
                self.grant(str(doc["token"]))
            elif path == "/_admin/contacts":
                return _Answer(201, {"data": self.add_contacts(int(doc.get("count", 1)))})
            else:
                return _Answer(404, {"error": "not_found"})
        except (KeyError, TypeError, ValueError) as exc:
            return _Answer(400, {"error": f"bad admin request: {exc}"})
        return _Answer(200, {"ok": True})


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _time_param(query: dict[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an ISO 8601 timestamp, got {raw!r}") from None


def _encode_cursor(updated_at: datetime, contact_id: str) -> str:
    raw = json.dumps([format_time(updated_at), contact_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, contact_id = json.loads(raw)
        return parse_time(stamp), str(contact_id)
    except (binascii.Error, ValueError, TypeError):
        raise _BadRequest("invalid cursor") from None


def _make_handler(api: FakeContactsApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
        server_version = "FakeContactsApi/1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = api.answer(self.command, self.path, headers, body)
            payload = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and demos read the counters instead

    return Handler


def main(argv: list[str] | None = None) -> int:
    """``python -m patchbay_example_contacts.fake_api``: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m patchbay_example_contacts.fake_api",
        description="Serve a fake contacts API on 127.0.0.1; prints its URL first.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    parser.add_argument("--contacts", type=int, default=250, help="contacts to generate")
    parser.add_argument(
        "--days", type=float, default=30, help="spread their updated_at over this many days"
    )
    parser.add_argument(
        "--start",
        default=format_time(DEFAULT_START),
        help="updated_at of the first contact (default 2024-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--token", action="append", help="an accepted token (repeatable; default demo-token)"
    )
    parser.add_argument("--page-size", type=int, default=50, help="default page size")
    parser.add_argument(
        "--rate-limit",
        metavar="N/SECONDS",
        help="answer 429 past N requests per window of SECONDS, e.g. 10/1",
    )
    args = parser.parse_args(argv)
    limit = None
    if args.rate_limit:
        count, _, seconds = args.rate_limit.partition("/")
        limit = (int(count), float(seconds or 1))
    api = FakeContactsApi(
        contacts=args.contacts,
        tokens=set(args.token or ["demo-token"]),
        start=parse_time(args.start),
        spread=timedelta(days=args.days),
        page_size=args.page_size,
        rate_limit=limit,
        port=args.port,
    )
    print(api.url, flush=True)
    tokens = sorted(args.token or ["demo-token"])
    print(
        f"fake contacts API: {args.contacts} contacts, tokens {tokens}; Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    api.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
