"""Where webhooks may go: http(s) URLs to global addresses only (server-side request
forgery protection).

Guarantee
    A delivery connects only to an address that was checked for that very connection:
    :class:`GuardedTransport` resolves the host inside httpcore's connect step, checks
    every address the name resolves to, and connects to a checked address (never
    resolving again), so a name that resolved to a public address when the endpoint was
    added and to ``127.0.0.1`` now (DNS rebinding) is refused. Environment proxies are
    ignored (``trust_env=False``) and redirects are not followed, so neither can carry a
    request elsewhere.

What is refused
    Addresses that are not global (loopback, private, link-local, shared, documentation,
    benchmarking, unspecified...), multicast and reserved ones, and IPv6 forms that embed
    such an IPv4 address (mapped, NAT64, 6to4), unless ``allow_private_networks`` is on
    or the address is in ``allowed_networks``. A name with any refused address is
    refused as a whole: the resolver's order must not decide.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from .errors import AddressNotAllowed, InvalidEndpointUrl
from .settings import Network

__all__ = [
    "AddressPolicy",
    "GuardedTransport",
    "Resolver",
    "system_resolver",
    "validate_url",
]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``await resolver(host, port)``: the IP addresses ``host`` resolves to."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL = 2048
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo``), addresses in its order, without
    duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def is_global_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is a global unicast address (the only kind allowed by default)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_global_address(embedded)
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
        and not ip.is_loopback
        and not ip.is_link_local
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses deliveries may connect to: global ones, plus ``allowed_networks``,
    plus everything when ``allow_private_networks``."""

    allow_private_networks: bool = False
    allowed_networks: tuple[Network, ...] = ()

    def allows(self, address: str | IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if self.allow_private_networks or is_global_address(ip):
            return True
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)

    def check(self, host: str, addresses: Iterable[str]) -> list[str]:
        """Return ``addresses`` if every one is allowed; else raise AddressNotAllowed."""
        found = list(addresses)
        if not found:
            raise AddressNotAllowed(f"host {host!r} resolves to no address")
        refused = [a for a in found if not self.allows(a)]
        if refused:
            raise AddressNotAllowed(
                f"host {host!r} resolves to non-global address(es) {', '.join(refused)}; "
                "webhooks may only reach public addresses unless allow_private_networks or "
                "allowed_networks permits them"
            )
        return found

    async def resolve(
        self, host: str, port: int, resolver: Resolver, within: float | None = None
    ) -> list[str]:
        """Resolve ``host`` (giving up after ``within`` seconds) and check every address;
        an IP literal is not resolved."""
        literal = _ip_literal(host)
        if literal is not None:
            return self.check(host, [str(literal)])
        try:
            async with asyncio.timeout(within):
                addresses = await resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        return self.check(host, addresses)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def validate_url(url: object) -> httpx.URL:
    """Parse an endpoint URL: absolute ``http``/``https`` with a host, no user
    credentials, at most 2048 characters; raises InvalidEndpointUrl. (Addresses are
    checked separately, see :class:`AddressPolicy`.)"""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        raise InvalidEndpointUrl(
            f"an endpoint URL is a string of 1 to {_MAX_URL} characters, got "
            f"{type(url).__name__}{'' if not isinstance(url, str) else f' of {len(url)}'}"
        )
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidEndpointUrl("an endpoint URL must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InvalidEndpointUrl(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidEndpointUrl(
            f"an endpoint URL must start with http:// or https://, not {parsed.scheme!r}"
        )
    if not parsed.host:
        raise InvalidEndpointUrl("an endpoint URL must name a host")
    if parsed.userinfo:
        raise InvalidEndpointUrl(
            "an endpoint URL must not carry user credentials (user:password@); they would "
            "be stored and logged in plain text"
        )
    return parsed


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking each host itself and
    connecting only to the addresses it checked."""

    def __init__(
        self, policy: AddressPolicy, resolver: Resolver, inner: httpcore.AsyncNetworkBackend
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.resolve(host, port, self._resolver, timeout)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # check() never returns an empty list
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed("webhooks cannot be delivered to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that connects only where an :class:`AddressPolicy` allows,
    checking at connect time (see the module's guarantee). No proxies, HTTP/1.1.

    ``resolver`` defaults to :func:`system_resolver`; tests pass their own to play DNS
    tricks."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        super().__init__(limits=limits, trust_env=False)
        backend = _GuardedBackend(policy, resolver or system_resolver, httpcore.AnyIOBackend())
        # httpx builds its pool without a way to pass a network backend; build an
        # equivalent one that has ours (the DNS rebinding test fails if this ever stops
        # taking effect).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
