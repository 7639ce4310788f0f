"""Encoding of job data to the JSON text Postgres stores as ``jsonb``."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidPayload, PayloadTooLarge

# json writes NUL as \u0000; an escaped backslash before it ("\\u0000") is not a NUL.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def encode_payload(data: Any, *, limit: int, what: str = "job data") -> str:
    """Serialise ``data`` for a jsonb column, refusing what Postgres or the limit would not
    take: non-JSON values, NaN/Infinity, NUL characters, unpaired surrogates, deep nesting."""
    try:
        text = _encode(data)
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise InvalidPayload(f"{what} is nested too deeply to serialise") from exc
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise InvalidPayload(f"{what} contains a NUL character, which jsonb cannot store")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidPayload(f"{what} contains text that is not valid Unicode: {exc}") from exc
    if size > limit:
        raise PayloadTooLarge(f"{what} is {size} bytes, over the limit of {limit} bytes")
    return text
