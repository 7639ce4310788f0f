-- Webhook delivery: endpoints per tenant, messages, one delivery per (message, endpoint)
-- and every attempt of it.
-- Applied with search_path set to the patchbay schema; names are unqualified on purpose.

-- An endpoint's signing secrets live in the vault; the rows hold pinned references only
-- (secret://<tenant>/webhooks/endpoint/<id>@<version>). During a rotation's grace period
-- the previous secret is kept too, and deliveries carry both signatures.
-- event_types: null receives every event type; otherwise exact types, or 'prefix.*'.
-- failing_since: the first failed attempt of the current failure streak (null after a
-- success); an endpoint failing for the configured period is disabled.
create table webhook_endpoint (
    id                          uuid primary key,
    tenant                      text not null,
    url                         text not null check (length(url) between 1 and 2048),
    description                 text not null default '',
    event_types                 text[],
    secret_ref                  text not null,
    previous_secret_ref         text,
    previous_secret_expires_at  timestamptz,
    enabled                     boolean not null default true,
    disabled_reason             text,
    disabled_at                 timestamptz,
    failing_since               timestamptz,
    created_at                  timestamptz not null,
    updated_at                  timestamptz not null,
    check (enabled or disabled_reason is not null)
);

-- Listing a tenant's endpoints, and finding the enabled ones an event goes to.
create index webhook_endpoint_tenant_idx on webhook_endpoint (tenant, created_at, id);

-- body: the exact text POSTed and signed ({"type", "timestamp", "data"}), kept as text so
-- every retry and replay signs and sends the same bytes.
create table webhook_message (
    id          uuid primary key,
    tenant      text not null,
    event_type  text not null,
    body        text not null,
    created_at  timestamptz not null
);

-- Listing and replaying a tenant's messages by time.
create index webhook_message_tenant_idx on webhook_message (tenant, created_at, id);

-- Retention deletes the oldest messages of every tenant.
create index webhook_message_created_idx on webhook_message (created_at);

-- One delivery of one message to one endpoint; its id is also its job's id in the
-- webhook.deliver queue. attempts and next_attempt_at are the retry schedule's state: a
-- job re-run after a lost lease reads them and keeps to the schedule.
-- state: pending (to be attempted), succeeded, failed (schedule exhausted or 410 Gone),
-- cancelled (its endpoint was disabled or deleted before it succeeded).
create table webhook_delivery (
    id               uuid primary key,
    message_id       uuid not null references webhook_message (id) on delete cascade,
    endpoint_id      uuid not null references webhook_endpoint (id) on delete cascade,
    state            text not null default 'pending'
                         check (state in ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         integer not null default 0 check (attempts >= 0),
    next_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    replay           boolean not null default false,
    created_at       timestamptz not null,
    updated_at       timestamptz not null
);

create index webhook_delivery_message_idx on webhook_delivery (message_id, created_at);
create index webhook_delivery_endpoint_idx on webhook_delivery (endpoint_id, created_at);

-- Every attempt: when, the HTTP status (null when no response), how long it took, the
-- response's headers and body (truncated to the configured limit), and the error.
create table webhook_attempt (
    id                bigint generated always as identity primary key,
    delivery_id       uuid not null references webhook_delivery (id) on delete cascade,
    message_id        uuid not null,
    endpoint_id       uuid not null,
    attempt           integer not null check (attempt > 0),
    attempted_at      timestamptz not null,
    url               text not null,
    outcome           text not null
                          check (outcome in ('succeeded', 'failed', 'timeout', 'refused',
                                             'gone')),
    status            integer,
    duration_ms       double precision not null,
    response_headers  jsonb,
    response_body     text,
    body_truncated    boolean not null default false,
    error             text,
    next_attempt_at   timestamptz
);

create index webhook_attempt_message_idx on webhook_attempt (message_id, id);
create index webhook_attempt_delivery_idx on webhook_attempt (delivery_id, id);
