"""The HTTP client handed to connector code: httpx (async) with retries and error mapping.

- Connection errors, timeouts and 5xx are retried (tenacity: exponential backoff with
  jitter, ``attempts`` tries in all), then raise :class:`RequestFailed` (transient).
- 401/403 raise :class:`AuthError`; 429 raises :class:`RateLimited` with the provider's
  Retry-After (seconds or HTTP date; default 60 s, capped at ``max_retry_after``).
- The decoding helpers (``get_json``, ``paginate``) raise :class:`RequestRejected` (not
  retried) for other client errors, except 408/409/425 which may pass and stay transient.
- Every request is a child span ``HTTP <METHOD>`` of the job's span (OpenTelemetry API).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from .errors import AuthError, RateLimited, RequestFailed, RequestRejected

__all__ = ["HttpClient", "Page", "retry_after_seconds"]

_tracer = trace.get_tracer("patchbay.connectors")

# Client errors that may pass if the same request is sent again later: a timeout on the
# provider's side, a conflicting concurrent write, "too early" during a TLS replay window.
_TRANSIENT_CLIENT_ERRORS = frozenset({408, 409, 425})


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def retry_after_seconds(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return min(default, cap)
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return min(default, cap)
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paginated listing: its ``items`` and the ``cursor`` of the next page
    (None on the last)."""

    items: list[Any]
    cursor: str | None


class HttpClient:
    """An async HTTP client for one job. Use ``await client.get(...)`` etc.; responses
    with 2xx/3xx/4xx other than 401/403/429 are returned for the caller to interpret."""

    def __init__(
        self,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        attempts: int = 4,
        max_retry_after: float = 3600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=dict(headers or {}), timeout=timeout, transport=transport
        )
        self.attempts = attempts
        self.max_retry_after = max_retry_after
        self.requests = 0

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def set_header(self, name: str, value: str) -> None:
        """Set a header sent with every request (e.g. Authorization)."""
        self._client.headers[name] = value

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request with retries; see the module docstring for the error mapping."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(method, url, **kwargs)
        except _Retryable as exc:
            raise RequestFailed(str(exc), exc.status) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        # No automatic exception recording: a transport error's text may carry the URL's
        # query (tokens); the status code attribute tells what happened.
        with _tracer.start_as_current_span(
            f"HTTP {method.upper()}", record_exception=False
        ) as span:
            span.set_attribute("http.request.method", method.upper())
            span.set_attribute("url.path", httpx.URL(url).path)
            try:
                response = await self._client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                raise _Retryable(f"{method} {url}: {type(exc).__name__}", None) from exc
            span.set_attribute("http.response.status_code", response.status_code)
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"{method} {url} answered {status}: credentials were rejected")
        if status == 429:
            delay = retry_after_seconds(
                response.headers.get("retry-after"), 60.0, self.max_retry_after
            )
            raise RateLimited(delay, f"{method} {url} answered 429; retry after {delay:g}s")
        if status >= 500:
            raise _Retryable(f"{method} {url} answered {status}", status)
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET with retries."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST with retries (only use for idempotent requests)."""
        return await self.request("POST", url, **kwargs)

    async def get_json(self, url: str, **kwargs: Any) -> Any:
        """GET and decode JSON. A 4xx answer raises RequestRejected (not retried; 408, 409
        and 425 raise RequestFailed, transient); any other non-2xx raises RequestFailed."""
        response = await self.get(url, **kwargs)
        status = response.status_code
        if 400 <= status < 500 and status not in _TRANSIENT_CLIENT_ERRORS:
            raise RequestRejected(f"GET {url} answered {status}: the provider refused it", status)
        if not response.is_success:
            raise RequestFailed(f"GET {url} answered {status}", status)
        return response.json()

    async def paginate(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        cursor_param: str = "cursor",
        items_key: str = "data",
        next_key: str = "next_cursor",
    ) -> AsyncIterator[Page]:
        """Follow cursor pagination: yields each page; the next request passes the previous
        page's ``next_key`` as ``cursor_param``, until it is empty."""
        query = dict(params or {})
        while True:
            if cursor is not None:
                query[cursor_param] = cursor
            body = await self.get_json(url, params=query)
            cursor = body.get(next_key) or None
            yield Page(list(body.get(items_key) or []), cursor)
            if cursor is None:
                return
