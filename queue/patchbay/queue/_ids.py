"""Time-ordered job ids (UUID version 7, RFC 9562).

Ids are made by the client so a send needs no RETURNING, and time-ordered so the primary
key index grows at its right edge instead of splitting pages at random.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_VARIANT = (0x7 << 76) | (0x2 << 62)
_RANDOM_MASK = (1 << 74) - 1  # 12 bits rand_a + 62 bits rand_b


def _place_random(rand: int) -> int:
    # rand_a goes in bits 64..75, rand_b in bits 0..61; version and variant sit between.
    return ((rand >> 62) << 64) | (rand & ((1 << 62) - 1))


def uuid7() -> uuid.UUID:
    """One new UUIDv7."""
    return uuid7_batch(1)[0]


def uuid7_batch(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7s sharing one millisecond prefix; random bits keep them unique
    and a per-batch counter keeps them ordered within the batch."""
    millis = time.time_ns() // 1_000_000
    prefix = (millis & ((1 << 48) - 1)) << 80 | _VERSION_VARIANT
    start = int.from_bytes(os.urandom(8), "big") & (_RANDOM_MASK >> 24)
    # Counter in the high random bits preserves order inside the batch.
    tail = int.from_bytes(os.urandom(3), "big")
    ids: list[uuid.UUID] = []
    append = ids.append
    new = uuid.UUID.__new__
    set_int = object.__setattr__
    for offset in range(count):
        value = prefix | _place_random((((start + offset) << 24) | tail) & _RANDOM_MASK)
        item = new(uuid.UUID)
        set_int(item, "int", value)
        set_int(item, "is_safe", uuid.SafeUUID.unknown)
        append(item)
    return ids
