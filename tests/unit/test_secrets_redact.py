from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from patchbay.secrets import REDACTED, RedactingFilter, Redactor, install_log_redaction

TOKEN = "tok_9f8e7d6c5b4a/+=&?"


def _redactor(*values: str) -> Redactor:
    redactor = Redactor()
    redactor.register_many(values)
    return redactor


@pytest.mark.smoke
def test_value_and_its_common_forms_are_scrubbed() -> None:
    r = _redactor(TOKEN)
    raw = TOKEN.encode()
    leaks = [
        TOKEN,
        f"Bearer {TOKEN}",
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(TOKEN, safe=""),
        urllib.parse.quote(TOKEN, safe="").lower(),
        urllib.parse.quote_plus(TOKEN),
        json.dumps({"token": TOKEN}),
        repr({"token": TOKEN}),
    ]
    for prefix in ("", "u:", "us:", "user:"):  # every base64 alignment
        leaks.append(base64.b64encode(prefix.encode() + raw).decode())
        leaks.append(base64.b64encode(prefix.encode() + raw + b"!").decode())
    for leak in leaks:
        out = r(f"before {leak} after")
        assert REDACTED in out, leak
        for form in (TOKEN, base64.b64encode(raw).decode()[:-4]):
            assert form not in out, (leak, out)
        assert out.startswith("before ") and out.endswith(" after")


def test_unregistered_text_is_left_alone() -> None:
    r = _redactor(TOKEN)
    text = "nothing to see: tok_9f8e7d6c5b4a but not the whole token"
    assert r(text) == text.replace(TOKEN, REDACTED)
    assert Redactor()("anything") == "anything"
    assert r("") == ""


def test_overlapping_values_registered_at_different_times() -> None:
    r = Redactor()
    r.register("abcdef")
    assert r("x abcdef y") == f"x {REDACTED} y"  # compiles the first level
    r.register("000abcdef111")
    out = r("a 000abcdef111 b abcdef c")
    assert out == f"a {REDACTED} b {REDACTED} c"
    assert "000" not in out and "111" not in out


def test_many_values_across_levels() -> None:
    r = Redactor()
    values = [f"value-{i:04d}-{'x' * (i % 7)}" for i in range(300)]
    for i, value in enumerate(values):
        r.register(value)
        if i % 37 == 0:
            r("compile now")
    assert len(r) == 300
    text = " | ".join(values)
    out = r(text)
    assert all(v not in out for v in values)
    assert out.count(REDACTED) == 300
    assert r.contains_secret(values[123]) and not r.contains_secret("value-x")


def test_min_length_skips_short_values() -> None:
    r = Redactor(min_length=4)
    r.register("abc")
    r.register("abcd")
    assert r("abc abcd") == f"abc {REDACTED}"
    with pytest.raises(ValueError):
        Redactor(min_length=0)


def test_redact_data_walks_structures() -> None:
    r = _redactor(TOKEN)
    data = {"headers": [("Authorization", f"Bearer {TOKEN}")], TOKEN: 1, "n": 2.5}
    assert r.redact_data(data) == {
        "headers": [("Authorization", f"Bearer {REDACTED}")],
        REDACTED: 1,
        "n": 2.5,
    }


_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="[]REDACT")


@given(
    value=st.text(_ALPHABET, min_size=6, max_size=40),
    before=st.text(_ALPHABET, max_size=30),
    after=st.text(_ALPHABET, max_size=30),
)
def test_no_registered_value_survives(value: str, before: str, after: str) -> None:
    assume(value.strip())
    r = _redactor(value)
    for text in (before + value + after, before + json.dumps(value) + after):
        assert value not in r(text)
    # Whatever its byte offset inside a longer base64 text, the value's part is found.
    encoded = base64.b64encode((before + value + after).encode()).decode()
    assert REDACTED in r(encoded)


def _logger_with_stream(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(user)s"))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


def test_logging_filter_redacts_message_args_exception_stack_and_extra() -> None:
    r = _redactor(TOKEN)
    logger, stream, handler = _logger_with_stream("test.secrets.redact.filter")
    handler.addFilter(RedactingFilter(r))
    try:
        raise RuntimeError(f"upstream said no to {TOKEN}")
    except RuntimeError:
        logger.exception(
            "calling with %s", TOKEN, extra={"user": {"token": TOKEN}}, stack_info=True
        )
    logger.warning("plain %s %d", "text", 3, extra={"user": "nobody"})
    logger.info("bad format %s %s", TOKEN, extra={"user": "-"})  # one argument missing
    out = stream.getvalue()
    assert TOKEN not in out
    assert out.count(REDACTED) >= 4
    assert "Traceback" in out and "RuntimeError: upstream said no to [REDACTED]" in out
    assert "plain text 3 nobody" in out
    assert "bad format" in out


def test_install_log_redaction_covers_every_handler() -> None:
    r = _redactor(TOKEN)
    logger, stream, handler = _logger_with_stream("test.secrets.redact.install")
    other = io.StringIO()
    logger.addHandler(logging.StreamHandler(other))
    flt = install_log_redaction(r, logger)
    install_log_redaction(r, logger)  # idempotent
    assert handler.filters == [flt]
    logger.error("token=%s", TOKEN, extra={"user": "u"})
    assert TOKEN not in stream.getvalue() + other.getvalue()
    assert REDACTED in other.getvalue()
