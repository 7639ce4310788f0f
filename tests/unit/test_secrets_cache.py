from __future__ import annotations

from datetime import UTC, datetime

from patchbay.secrets import ResolutionCache, Secret


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _secret(name: str, version: int = 1) -> Secret:
    return Secret("acme", name, version, datetime.now(UTC), f"value-{name}")


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache = ResolutionCache(ttl=5, max_entries=10, clock=clock)
    cache.put(("acme", "a", None), _secret("a"))
    clock.now += 4.9
    assert cache.get(("acme", "a", None)) is not None
    clock.now += 0.1
    assert cache.get(("acme", "a", None)) is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert len(cache) == 0


def test_lru_bound_and_invalidation() -> None:
    cache = ResolutionCache(ttl=60, max_entries=2, clock=FakeClock())
    cache.put(("acme", "a", None), _secret("a"))
    cache.put(("acme", "b", None), _secret("b"))
    assert cache.get(("acme", "a", None)) is not None  # a is now the most recent
    cache.put(("acme", "c", None), _secret("c"))
    assert cache.get(("acme", "b", None)) is None
    cache.put(("other", "c", 2), _secret("c", 2))
    cache.invalidate("acme", "c")
    assert cache.get(("acme", "c", None)) is None
    assert cache.get(("other", "c", 2)) is not None
    cache.invalidate("other")
    assert len(cache) == 0


def test_zero_ttl_disables() -> None:
    cache = ResolutionCache(ttl=0, max_entries=10)
    assert not cache.enabled
    cache.put(("acme", "a", None), _secret("a"))
    assert len(cache) == 0


def test_secret_repr_hides_value() -> None:
    secret = _secret("a")
    assert "value-a" not in repr(secret)
    assert "value-a" not in str(secret)
