"""Settings of the webhook service, validated at construction.

Durations are seconds (``float``) or :class:`datetime.timedelta`, stored as seconds.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from .errors import InvalidWebhookOption

__all__ = ["DEFAULT_RETRY_SCHEDULE", "Network", "WebhookSettings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    5 * 60.0,
    30 * 60.0,
    2 * 3600.0,
    5 * 3600.0,
    10 * 3600.0,
    10 * 3600.0,
)
"""Delays before attempts 1 to 8: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h."""


def _seconds(option: str, value: object, *, allow_zero: bool = True) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidWebhookOption(
            f"{option} must be a number of seconds or a timedelta, got {value!r}"
        )
    result = float(value)
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidWebhookOption(f"{option} must be finite and {bound} seconds, got {value!r}")
    return result


def _integer(option: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidWebhookOption(f"{option} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidWebhookOption(f"{option} must be between {minimum} and {maximum}, got {value}")
    return value


def _fraction(option: str, value: object, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidWebhookOption(f"{option} must be a number, got {value!r}")
    if not 0 <= value <= maximum:
        raise InvalidWebhookOption(f"{option} must be between 0 and {maximum:g}, got {value}")
    return float(value)


def _networks(value: object) -> tuple[Network, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidWebhookOption(
            f"allowed_networks must be a list of networks like '10.0.0.0/8', got {value!r}"
        )
    found: list[Network] = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            found.append(item)
            continue
        try:
            found.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise InvalidWebhookOption(
                f"allowed_networks: {item!r} is not a network (e.g. '127.0.0.1/32')"
            ) from exc
    return tuple(found)


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How webhooks are delivered. Every field has a default; build with
    :meth:`build` to validate keyword options (unknown names raise).

    - ``queue``: the job queue deliveries run in (default ``webhook.deliver``).
    - ``retry_schedule``: seconds to wait before each attempt; its length is the number of
      attempts (default: 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, so 8 attempts over
      about 28 hours). Longer schedules ride out longer receiver outages.
    - ``jitter``: each retry delay is multiplied by a random factor in
      ``1 +- jitter`` (default 0.2) so retries of a burst spread out.
    - ``timeout``: seconds one attempt may take in all: connect, send, response headers
      and the (truncated) body (default 15). Slower receivers count as timeouts.
    - ``slow_down_delay``: the least delay after a 429 or a timeout (default 60 s), whatever
      the schedule says: an overloaded receiver is not hit again at once.
    - ``retry_after_max``: a ``Retry-After`` header lengthens the next delay up to this
      many seconds (default 3600); beyond it, the cap applies, so a receiver cannot park
      deliveries for days.
    - ``disable_after``: an endpoint whose attempts all failed for this long is disabled
      and reported (default 5 days). Shorter stops hammering dead receivers sooner but
      gives their owners less time to notice.
    - ``response_body_limit``: bytes of a response body recorded with its attempt (default
      4096; the rest is not even read). ``response_headers_limit``: headers recorded
      (default 50, each value cut at 1024 characters).
    - ``max_payload_bytes``: largest encoded message body (default 256 KiB).
    - ``allow_private_networks``: deliver to loopback, private, link-local and other
      non-global addresses too (default false: refused, against server-side request
      forgery). ``allowed_networks``: networks allowed even so (e.g. ``["10.1.2.0/24"]``
      for a known internal receiver); narrower than opening everything.
    - ``secret_grace``: how long a rotated-out signing secret keeps signing next to the
      new one (default 24 h), so receivers can switch without dropping deliveries.
    - ``max_connections``: HTTP connections kept open at most (default 100).
    - ``user_agent``: the ``User-Agent`` header (default ``patchbay-webhooks/1``).
    """

    queue: str = "webhook.deliver"
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: float = 0.2
    timeout: float = 15.0
    slow_down_delay: float = 60.0
    retry_after_max: float = 3600.0
    disable_after: float = 5 * 24 * 3600.0
    response_body_limit: int = 4096
    response_headers_limit: int = 50
    max_payload_bytes: int = 256 * 1024
    allow_private_networks: bool = False
    allowed_networks: tuple[Network, ...] = field(default=())
    secret_grace: float = 24 * 3600.0
    max_connections: int = 100
    user_agent: str = "patchbay-webhooks/1"

    @classmethod
    def build(cls, **options: Any) -> WebhookSettings:
        """Validate keyword options into settings; unknown names raise
        InvalidWebhookOption."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidWebhookOption(
                f"unknown webhook setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        default = cls()
        values = {**{f.name: getattr(default, f.name) for f in fields(cls)}, **options}
        schedule = values["retry_schedule"]
        if isinstance(schedule, str) or not isinstance(schedule, Iterable):
            raise InvalidWebhookOption("retry_schedule must be a list of delays in seconds")
        delays = tuple(_seconds("retry_schedule entry", d) for d in schedule)
        if not 1 <= len(delays) <= 100:
            raise InvalidWebhookOption(
                f"retry_schedule must hold 1 to 100 delays, got {len(delays)}"
            )
        queue = values["queue"]
        if not isinstance(queue, str) or not queue:
            raise InvalidWebhookOption(f"queue must be a queue name, got {queue!r}")
        allow_private = values["allow_private_networks"]
        if not isinstance(allow_private, bool):
            raise InvalidWebhookOption("allow_private_networks must be true or false")
        agent = values["user_agent"]
        if not isinstance(agent, str) or not agent or any(c in agent for c in "\r\n"):
            raise InvalidWebhookOption("user_agent must be a one-line, non-empty string")
        return cls(
            queue=queue,
            retry_schedule=delays,
            jitter=_fraction("jitter", values["jitter"], 0.9),
            timeout=_seconds("timeout", values["timeout"], allow_zero=False),
            slow_down_delay=_seconds("slow_down_delay", values["slow_down_delay"]),
            retry_after_max=_seconds("retry_after_max", values["retry_after_max"]),
            disable_after=_seconds("disable_after", values["disable_after"], allow_zero=False),
            response_body_limit=_integer(
                "response_body_limit", values["response_body_limit"], 0, 1024 * 1024
            ),
            response_headers_limit=_integer(
                "response_headers_limit", values["response_headers_limit"], 0, 1000
            ),
            max_payload_bytes=_integer(
                "max_payload_bytes", values["max_payload_bytes"], 64, 16 * 1024 * 1024
            ),
            allow_private_networks=allow_private,
            allowed_networks=_networks(values["allowed_networks"]),
            secret_grace=_seconds("secret_grace", values["secret_grace"]),
            max_connections=_integer("max_connections", values["max_connections"], 1, 10_000),
            user_agent=agent,
        )

    @property
    def max_attempts(self) -> int:
        """Attempts a delivery gets in all (the schedule's length)."""
        return len(self.retry_schedule)
