"""The resolution cache: decrypted values kept in process memory for a short time.

Guarantee: an entry is served at most ``ttl`` seconds after it was fetched, never written
to disk, and dropped at once when this process puts, deletes or shreds the secret. Another
process's change is seen within ``ttl`` (the trade-off: a longer ttl saves database round
trips and decryptions, a shorter one picks up rotated credentials sooner). ``ttl`` 0
disables caching. The cache holds at most ``max_entries`` values, least recently used
dropped first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .models import Secret

__all__ = ["CacheKey", "ResolutionCache"]

CacheKey = tuple[str, str, int | None]


class ResolutionCache:
    """A TTL + LRU map from ``(tenant, name, version or None)`` to a :class:`Secret`."""

    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, Secret]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when ``ttl`` is 0."""
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Secret | None:
        """The fresh entry for ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, secret = entry
        if self._clock() >= expires:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return secret

    def put(self, key: CacheKey, secret: Secret) -> None:
        """Store ``secret`` under ``key`` for ``ttl`` seconds."""
        if not self.enabled:
            return
        self._entries[key] = (self._clock() + self.ttl, secret)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, tenant: str, name: str | None = None) -> None:
        """Drop every entry of ``tenant`` (and ``name``, when given)."""
        for key in [k for k in self._entries if k[0] == tenant and name in (None, k[1])]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
