"""Errors raised by ``patchbay.connectors.webhooks``.

Every error derives from :class:`WebhookError`; those about bad input are also
``patchbay.queue.InvalidInput`` (and so ``ValueError``), and nothing was written::

    WebhookError
    ├── InvalidWebhookInput      bad input; nothing was written (also queue.InvalidInput)
    │   ├── InvalidEndpointUrl   not an absolute http(s) URL, or credentials in it
    │   │   └── AddressNotAllowed    the host is (or resolves to) a non-global address
    │   ├── InvalidEventType     an event type or filter that is not allowed
    │   ├── InvalidSigningSecret a secret that is not ``whsec_`` + base64 of 24-64 bytes
    │   ├── InvalidWebhookPayload  not JSON, or larger than ``max_payload_bytes``
    │   └── InvalidWebhookOption   a setting or argument out of range
    ├── EndpointNotFound         no endpoint with that id
    ├── MessageNotFound          no message with that id
    └── EndpointDisabled         the endpoint is disabled; enable it first

Delivery failures are not raised to callers: they are recorded as attempts (see
``Webhooks.attempts``) and drive the retry schedule.
"""

from __future__ import annotations

from patchbay.queue import InvalidInput

__all__ = [
    "AddressNotAllowed",
    "EndpointDisabled",
    "EndpointNotFound",
    "InvalidEndpointUrl",
    "InvalidEventType",
    "InvalidSigningSecret",
    "InvalidWebhookInput",
    "InvalidWebhookOption",
    "InvalidWebhookPayload",
    "MessageNotFound",
    "WebhookError",
]


class WebhookError(Exception):
    """Base class of every error raised by ``patchbay.connectors.webhooks``."""


class InvalidWebhookInput(WebhookError, InvalidInput):
    """The call's input is invalid. Nothing was written; correct it and call again."""


class InvalidEndpointUrl(InvalidWebhookInput):
    """An endpoint URL must be an absolute ``http://`` or ``https://`` URL of at most 2048
    characters, with a host and without user credentials (put those in the signature
    check on the receiving side instead)."""


class AddressNotAllowed(InvalidEndpointUrl):
    """The URL's host is, or resolves to, a loopback, private, link-local or otherwise
    non-global address, which webhooks may not reach (server-side request forgery). If
    that network is really meant, allow it with the ``allow_private_networks`` or
    ``allowed_networks`` setting."""


class InvalidEventType(InvalidWebhookInput):
    """An event type is 1-200 characters of letters, digits and ``_ . : - /``, starting
    with a letter, digit or ``_``; a filter entry may also be ``prefix.*``."""


class InvalidSigningSecret(InvalidWebhookInput):
    """A signing secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes
    (Standard Webhooks format); omit it to have one generated."""


class InvalidWebhookPayload(InvalidWebhookInput):
    """An event payload must be JSON-serialisable (no NaN) and, once encoded, at most the
    service's ``max_payload_bytes``. Send large blobs by reference."""


class InvalidWebhookOption(InvalidWebhookInput):
    """A setting or argument is unknown or out of range; the message names it."""


class EndpointNotFound(WebhookError, LookupError):
    """No endpoint has that id (it may have been deleted); ``list_endpoints`` shows them."""


class MessageNotFound(WebhookError, LookupError):
    """No message has that id; ``list_messages`` shows a tenant's messages."""


class EndpointDisabled(WebhookError):
    """The endpoint is disabled, so nothing is delivered to it; ``enable_endpoint`` first
    (the endpoint's ``disabled_reason`` says why it was disabled)."""
