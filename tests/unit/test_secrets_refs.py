from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchbay.secrets import (
    InvalidName,
    InvalidReference,
    SecretRef,
    format_ref,
    is_ref,
    parse_ref,
    validate_secret_name,
    validate_tenant,
)

_SEGMENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,15}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
TENANTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True)
NAMES = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
VERSIONS = st.none() | st.integers(min_value=1, max_value=2**31 - 1)


def test_parse_and_format_a_reference() -> None:
    ref = parse_ref("secret://acme/hubspot/oauth.token@3")
    assert ref == SecretRef("acme", "hubspot/oauth.token", 3)
    assert str(ref) == "secret://acme/hubspot/oauth.token@3"
    assert str(ref.latest()) == "secret://acme/hubspot/oauth.token"
    assert parse_ref("secret://t-1/k").version is None
    assert format_ref("acme", "a/b") == "secret://acme/a/b"
    assert parse_ref(ref) is ref


@given(TENANTS, NAMES, VERSIONS)
def test_format_then_parse_is_identity(tenant: str, name: str, version: int | None) -> None:
    text = format_ref(tenant, name, version)
    assert parse_ref(text) == SecretRef(tenant, name, version)
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "acme/token",
        "secret:/acme/token",
        "secrets://acme/token",
        "secret://",
        "secret://acme",
        "secret://acme/",
        "secret:///token",
        "secret://acme//token",
        "secret://acme/token/",
        "secret://acme/./token",
        "secret://acme/../b/token",
        "secret://acme/to ken",
        "secret://ac me/token",
        "secret://-acme/token",
        "secret://acme/token@",
        "secret://acme/token@0",
        "secret://acme/token@01",
        "secret://acme/token@-1",
        "secret://acme/token@1.5",
        "secret://acme/token@v2",
        "secret://acme/token@1@2",
        "secret://acme/token@99999999999",
        "secret://acme/token@\u0661",  # an Arabic-Indic digit one
        "secret://acme/tok\x00en",
        "secret://acme/" + "x" * 201,
        "secret://" + "t" * 101 + "/token",
        "secret://acme/tøken",
    ],
)
def test_malformed_references_raise_invalid_reference(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_ref(text)


@pytest.mark.parametrize("value", [None, 3, b"secret://a/b", ["secret://a/b"]])
def test_non_strings_are_not_references(value: object) -> None:
    assert not is_ref(value)
    with pytest.raises(InvalidReference):
        parse_ref(value)


def test_long_bad_input_is_cut_in_the_message() -> None:
    pasted = "secret://acme/" + "p@ssw0rd-" * 40
    with pytest.raises(InvalidReference) as info:
        parse_ref(pasted)
    assert pasted not in str(info.value)
    assert "(cut)" in str(info.value)


def test_invalid_names_and_tenants() -> None:
    for bad in ("", "a b", "a/", "/a", "a//b", ".", "x" * 201, 5):
        with pytest.raises(InvalidName):
            validate_secret_name(bad)
    for bad in ("", "_acme", "ac/me", "ac@me", "t" * 101, None):
        with pytest.raises(InvalidName):
            validate_tenant(bad)
    with pytest.raises(InvalidReference):
        SecretRef("acme", "token", 0)
    with pytest.raises(InvalidName):
        SecretRef("acme", "bad name")
