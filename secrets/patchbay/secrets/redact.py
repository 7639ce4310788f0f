"""Redaction: scrub resolved secret values from text before it is stored or shown.

Every value the vault hands out (or stores) is registered with the vault's
:class:`Redactor`, together with the forms it commonly takes on the way out of a program:

- base64 (standard and URL-safe alphabets, padded or not), also when the value sits at any
  byte offset inside a longer base64 text (``base64("user:" + token)`` in a Basic header);
- URL encoding (``quote``, ``quote_plus``, lower-case hex too);
- JSON and Python string escapes (how it looks inside a job row, a ``repr`` or a
  traceback);
- ``Bearer <value>`` and any other text that contains the value itself.

Apply it where text leaves the process or is stored: ``QueueClient(redact=redactor)`` for
job errors and tracebacks, :class:`RedactingFilter` on log handlers,
:meth:`Redactor.redact_data` for span attributes and API output.

Matching is one compiled regular expression built as a prefix tree of all the forms, so its
cost per character does not grow with the number of registered secrets. Values shorter
than ``min_length`` (default 1: everything) are not registered; raising it trades safety
for readable logs when tenants store very short values.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["REDACTED", "RedactingFilter", "Redactor", "install_log_redaction", "variants_of"]

REDACTED = "[REDACTED]"

# Fragments of a value's base64 at a shifted offset are only worth matching from this
# length: shorter ones would also match unrelated base64 text.
_MIN_FRAGMENT = 6
_PERCENT = re.compile(r"%[0-9A-F]{2}")

T = TypeVar("T")


def _b64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(raw).decode("ascii")
        forms.add(full)
        forms.add(full.rstrip("="))
        # At offset i inside a longer text, the characters wholly made of the value's bits
        # are those from ceil(8i/6) to floor(8(i+n)/6).
        for offset in (0, 1, 2):
            shifted = encode(b"\0" * offset + raw).decode("ascii")
            start = -(-8 * offset // 6)
            end = 8 * (offset + len(raw)) // 6
            fragment = shifted[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                forms.add(fragment)
    return forms


def variants_of(value: str) -> set[str]:
    """The forms of ``value`` the redactor scrubs (including ``value`` itself)."""
    forms = {value}
    forms |= _b64_forms(value.encode("utf-8"))
    for quoted in (
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    ):
        forms.add(quoted)
        forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), quoted))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(repr(value)[1:-1])
    forms.add(repr(value.encode("utf-8", "surrogatepass"))[2:-1])
    return {f for f in forms if f}


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, longest first, as a prefix tree: at each
    character only the branches that can still match are tried."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = True

    def render(node: dict[str, Any]) -> str:
        ends_here = "" in node
        branches = []
        for char in sorted(k for k in node if k):
            child = node[char]
            # Collapse single-child chains into one literal, keeping the nesting shallow.
            chain = [char]
            while len(child) == 1 and "" not in child:
                (next_char, child), *_ = child.items()
                chain.append(next_char)
            branches.append(re.escape("".join(chain)) + render(child))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends_here:
            return "(?:" + body + ")?"
        return body

    return render(root)


class Redactor:
    """Replaces registered secret values (and their encodings) in text with ``[REDACTED]``.

    Callable: ``redactor(text)`` is ``redactor.redact(text)``, so it can be passed as
    ``QueueClient(redact=redactor)``. Thread-safe: values may be registered from any thread
    or task while others redact. Values stay registered for the process's life (old values
    may still surface in late log lines); the set grows with the distinct values resolved.

    Cost: registering is cheap; the patterns are compiled lazily, on the next ``redact``.
    New forms go to a small pattern of their own, merged into larger ones as they grow
    (sizes halve from the oldest), so a process that keeps resolving new values compiles
    each form only O(log n) times and never stalls on recompiling everything.
    """

    def __init__(self, *, placeholder: str = REDACTED, min_length: int = 1) -> None:
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
            raise ValueError(f"min_length must be an integer >= 1, got {min_length!r}")
        self.placeholder = placeholder
        self.min_length = min_length
        self._values: set[str] = set()
        self._known_forms: set[str] = set()
        self._pending: set[str] = set()
        self._levels: list[tuple[list[str], re.Pattern[str]]] = []
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} value(s) registered)"

    def register(self, value: str) -> None:
        """Scrub ``value`` and its encodings from now on."""
        if not isinstance(value, str) or len(value) < self.min_length or value in self._values:
            return
        forms = variants_of(value)
        with self._lock:
            self._values.add(value)
            new = forms - self._known_forms
            self._known_forms |= new
            self._pending |= new

    def register_many(self, values: Iterable[str]) -> None:
        """Register several values."""
        for value in values:
            self.register(value)

    def _compiled(self) -> tuple[re.Pattern[str], ...]:
        if self._pending:
            with self._lock:
                if self._pending:
                    forms = sorted(self._pending)
                    self._pending = set()
                    levels = self._levels
                    levels.append((forms, _compile(forms)))
                    while len(levels) >= 2 and 2 * len(levels[-1][0]) >= len(levels[-2][0]):
                        newer, _ = levels.pop()
                        older, _ = levels.pop()
                        merged = older + newer
                        levels.append((merged, _compile(merged)))
                    self._patterns = tuple(pattern for _, pattern in levels)
        return self._patterns

    def redact(self, text: str) -> str:
        """``text`` with every registered form replaced by the placeholder."""
        patterns = self._compiled()
        if not patterns or not text:
            return text
        if len(patterns) == 1:
            return patterns[0].sub(self.placeholder, text)
        spans = sorted(m.span() for p in patterns for m in p.finditer(text))
        if not spans:
            return text
        # Matches of different levels may overlap (one value inside another): replace
        # their union, so no piece of the longer one survives.
        parts: list[str] = []
        position = 0
        start, end = spans[0]
        for next_start, next_end in spans[1:]:
            if next_start <= end:
                end = max(end, next_end)
                continue
            parts += (text[position:start], self.placeholder)
            position, start, end = end, next_start, next_end
        parts += (text[position:start], self.placeholder, text[end:])
        return "".join(parts)

    __call__ = redact

    def redact_data(self, data: T) -> T:
        """A copy of a JSON-like structure (dicts, lists, tuples, strings) with every string,
        key or value, redacted; other values are returned as they are."""
        return self._walk(data)  # type: ignore[no-any-return]

    def _walk(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self._walk(k): self._walk(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self._walk(v) for v in data]
        if isinstance(data, tuple):
            return tuple(self._walk(v) for v in data)
        return data

    def contains_secret(self, text: str) -> bool:
        """True if ``text`` holds a registered value or one of its forms."""
        return any(p.search(text) for p in self._compiled())


def _compile(forms: list[str]) -> re.Pattern[str]:
    try:
        return re.compile(_trie_pattern(forms))
    except (RecursionError, re.error):
        # Pathologically deep prefix nesting: a flat alternation, longest first.
        ordered = sorted(forms, key=len, reverse=True)
        return re.compile("|".join(re.escape(f) for f in ordered))


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record in place and lets it through.

    Attach it to **handlers** (``handler.addFilter(...)`` or :func:`install_log_redaction`):
    a filter on a logger does not see records propagated from its child loggers. It merges
    the arguments into the message, replaces exception info by its redacted text (so no
    later formatter can render the raw exception), and redacts the stack and any string
    passed in ``extra``.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``; always True."""
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str | dict | list | tuple):
                record.__dict__[key] = self.redactor.redact_data(value)
        return True


def install_log_redaction(
    redactor: Redactor, logger: logging.Logger | None = None
) -> RedactingFilter:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root
    logger) and return it. Handlers added later need ``handler.addFilter(filter)``."""
    target = logger or logging.getLogger()
    flt = RedactingFilter(redactor)
    for handler in target.handlers:
        if not any(
            isinstance(f, RedactingFilter) and f.redactor is redactor for f in handler.filters
        ):
            handler.addFilter(flt)
    return flt
