"""patchbay.connectors.webhooks: outbound webhooks, built in.

Endpoints per tenant with event filters and signing secrets kept in the vault; events
sent inside the caller's transaction; signed POSTs (Standard Webhooks) with a retry
schedule, every attempt recorded; endpoints disabled on 410 Gone or sustained failure;
replay; no requests to private networks unless allowed.

    client = QueueClient(url, redact=vault.redactor)
    async with Webhooks(client, vault) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", "https://hooks.acme.example/in",
                                               event_types=["invoice.*"])
        secret = await webhooks.reveal_secret(endpoint.id)     # give it to the receiver
        async with client.pool.connection() as conn, conn.transaction():
            ...  # the business write
            await webhooks.send_event("acme", "invoice.paid", {"id": "in_1"}, conn=conn)
        await webhooks.work(concurrency=20)                       # in the delivering daemon
"""

from .errors import (
    AddressNotAllowed,
    EndpointDisabled,
    EndpointNotFound,
    InvalidEndpointUrl,
    InvalidEventType,
    InvalidSigningSecret,
    InvalidWebhookInput,
    InvalidWebhookOption,
    InvalidWebhookPayload,
    MessageNotFound,
    WebhookError,
)
from .models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointDisabledHook,
    Message,
    SentMessage,
)
from .network import AddressPolicy, GuardedTransport, Resolver, system_resolver
from .service import Webhooks, log_endpoint_disabled
from .settings import DEFAULT_RETRY_SCHEDULE, WebhookSettings
from .signing import generate_secret, sign, signature_header

__all__ = [
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
