"""The public API of ``patchbay.connectors.webhooks``: ``__all__`` pinned, a docstring on
every public name and method, the error tree as drawn, settings validated at
construction, signatures as Standard Webhooks defines them. (No database needed.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

import patchbay.connectors.webhooks as webhooks
from patchbay.connectors.webhooks import errors
from patchbay.queue import InvalidInput

EXPECTED = [
    "DEFAULT_RETRY_SCHEDULE",
    "AddressNotAllowed",
    "AddressPolicy",
    "Attempt",
    "AttemptOutcome",
    "Delivery",
    "DeliveryState",
    "Endpoint",
    "EndpointDisabled",
    "EndpointDisabledHook",
    "EndpointNotFound",
    "GuardedTransport",
    "InvalidEndpointUrl",
    "InvalidEventType",
    "InvalidSigningSecret",
    "InvalidWebhookInput",
    "InvalidWebhookOption",
    "InvalidWebhookPayload",
    "Message",
    "MessageNotFound",
    "Resolver",
    "SentMessage",
    "WebhookError",
    "WebhookSettings",
    "Webhooks",
    "generate_secret",
    "log_endpoint_disabled",
    "sign",
    "signature_header",
    "system_resolver",
]


def test_all_is_pinned() -> None:
    assert sorted(webhooks.__all__) == sorted(EXPECTED)
    assert len(set(webhooks.__all__)) == len(webhooks.__all__)


@pytest.mark.parametrize("name", EXPECTED)
def test_public_names_and_methods_have_docstrings(name: str) -> None:
    obj = getattr(webhooks, name)
    if name in ("DEFAULT_RETRY_SCHEDULE", "Resolver"):
        return  # a constant and a type alias, documented where defined
    assert (obj.__doc__ or "").strip(), name
    if inspect.isclass(obj):
        missing = [
            member
            for member, value in vars(obj).items()
            if not member.startswith("_")
            and (inspect.isfunction(value) or isinstance(value, property | classmethod))
            and not (getattr(value, "__doc__", None) or "").strip()
        ]
        assert missing == [], f"{name}: {missing}"


def test_the_error_tree_is_as_drawn() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.WebhookError)
        assert name in doc, name
    for name in (
        "InvalidEndpointUrl",
        "AddressNotAllowed",
        "InvalidEventType",
        "InvalidSigningSecret",
        "InvalidWebhookPayload",
        "InvalidWebhookOption",
    ):
        cls = getattr(errors, name)
        assert issubclass(cls, InvalidInput) and issubclass(cls, ValueError), name
    assert issubclass(errors.AddressNotAllowed, errors.InvalidEndpointUrl)
    assert issubclass(errors.EndpointNotFound, LookupError)
    assert issubclass(errors.MessageNotFound, LookupError)


def test_settings_are_validated() -> None:
    settings = webhooks.WebhookSettings.build(
        retry_schedule=[0, timedelta(seconds=5)], disable_after=timedelta(days=1)
    )
    assert settings.retry_schedule == (0.0, 5.0) and settings.max_attempts == 2
    assert settings.disable_after == 86400.0
    bad = [
        {"retry_schedule": []},
        {"retry_schedule": [-1]},
        {"retry_schedule": "0,5"},
        {"jitter": 1.5},
        {"timeout": 0},
        {"disable_after": float("inf")},
        {"allowed_networks": ["not a network"]},
        {"allowed_networks": "10.0.0.0/8"},
        {"allow_private_networks": "yes"},
        {"response_body_limit": -1},
        {"user_agent": "a\r\nb"},
        {"no_such_setting": 1},
    ]
    for options in bad:
        with pytest.raises(webhooks.InvalidWebhookOption):
            webhooks.WebhookSettings.build(**options)


def test_signatures_follow_standard_webhooks() -> None:
    secret = webhooks.generate_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert len(key) == 32
    body = '{"type":"a","data":{}}'
    expected = base64.b64encode(
        hmac.new(key, f"msg_1.1700000000.{body}".encode(), hashlib.sha256).digest()
    ).decode()
    assert webhooks.sign(secret, "msg_1", 1700000000, body) == f"v1,{expected}"
    # The reference implementation signs the same way.
    from datetime import UTC, datetime

    reference = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1700000000, UTC), body)
    assert reference == f"v1,{expected}"
    other = webhooks.generate_secret()
    header = webhooks.signature_header([secret, other], "msg_1", 1700000000, body)
    assert header.split(" ") == [
        webhooks.sign(secret, "msg_1", 1700000000, body),
        webhooks.sign(other, "msg_1", 1700000000, body),
    ]
    for wrong in ("sk_123", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(webhooks.InvalidSigningSecret) as caught:
            webhooks.sign(wrong, "m", 1, body)
        assert wrong not in str(caught.value)  # errors never echo a secret
