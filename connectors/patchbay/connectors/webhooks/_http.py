"""One HTTP attempt of a delivery, and the retry decision that follows it."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from .errors import AddressNotAllowed
from .models import AttemptOutcome
from .settings import WebhookSettings

__all__ = ["AttemptResult", "next_delay", "parse_retry_after", "post"]

_HEADER_VALUE_LIMIT = 1024


@dataclass(slots=True)
class AttemptResult:
    """What one POST came to (before redaction)."""

    outcome: AttemptOutcome
    status: int | None = None
    duration_ms: float = 0.0
    headers: dict[str, str] | None = None
    body: str | None = None
    truncated: bool = False
    error: str | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` value (delta seconds or an HTTP date), or None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def next_delay(
    settings: WebhookSettings, attempt: int, result: AttemptResult, rand: float
) -> float | None:
    """Seconds until the attempt after ``attempt`` (counted from 1), or None when the
    schedule is spent. ``rand`` in [0, 1) picks the jitter.

    The schedule's delay, jittered by +-``jitter``; at least ``slow_down_delay`` after a
    429 or a timeout; at least the receiver's ``Retry-After``, capped at
    ``retry_after_max``."""
    if attempt >= settings.max_attempts:
        return None
    delay = settings.retry_schedule[attempt] * (1.0 + settings.jitter * (2.0 * rand - 1.0))
    if result.outcome is AttemptOutcome.TIMEOUT or result.status == 429:
        delay = max(delay, settings.slow_down_delay)
    if result.retry_after is not None:
        delay = max(delay, min(result.retry_after, settings.retry_after_max))
    return max(0.0, delay)


def _headers(response: httpx.Response, limit: int) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        if key in found:
            found[key] = f"{found[key]}, {value}"[:_HEADER_VALUE_LIMIT]
        elif len(found) < limit:
            found[key] = value[:_HEADER_VALUE_LIMIT]
    return found


def _text(data: bytes) -> str:
    # Postgres text cannot hold NUL.
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


async def post(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    settings: WebhookSettings,
) -> AttemptResult:
    """POST ``body`` and read the answer's status, headers and up to
    ``response_body_limit`` bytes of its body, all within ``timeout`` seconds."""
    limit = settings.response_body_limit
    started = time.perf_counter()
    result = AttemptResult(AttemptOutcome.FAILED)
    try:
        async with asyncio.timeout(settings.timeout):
            async with http.stream("POST", url, content=body, headers=headers) as response:
                result.status = response.status_code
                result.headers = _headers(response, settings.response_headers_limit)
                chunks = bytearray()
                async for chunk in response.aiter_bytes():
                    chunks += chunk
                    if len(chunks) > limit:
                        result.truncated = True
                        break
                result.body = _text(bytes(chunks[:limit]))
                result.retry_after = parse_retry_after(
                    response.headers.get("retry-after"), time.time()
                )
        if 200 <= response.status_code < 300:
            result.outcome = AttemptOutcome.SUCCEEDED
        elif response.status_code == 410:
            result.outcome = AttemptOutcome.GONE
            result.error = "410 Gone: the receiver says this endpoint no longer exists"
        else:
            result.error = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    except (TimeoutError, httpx.TimeoutException) as exc:
        result.outcome = AttemptOutcome.TIMEOUT
        detail = f" ({type(exc).__name__})" if isinstance(exc, httpx.TimeoutException) else ""
        result.error = f"no complete answer within {settings.timeout:g}s{detail}"
    except AddressNotAllowed as exc:
        result.outcome = AttemptOutcome.REFUSED
        result.error = str(exc)
    except Exception as exc:
        # httpx.HTTPError (refused, reset, TLS...) and anything unforeseen on the way: a
        # failed attempt that follows the schedule, not a crashed job.
        result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        result.duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
    return result


def utc_timestamp(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
