-- Runtime: tenants, integrations, their audit events, attention incidents, notifications.

create table tenant (
    id                  text primary key,
    name                text not null,
    status              text not null default 'active' check (status in ('active', 'disabled')),
    -- Limits: jobs of this tenant active at once (null: unlimited), starts per interval
    -- (a rate limit shared by all its integrations), and its weight in fair dispatch.
    max_concurrent      integer check (max_concurrent is null or max_concurrent >= 1),
    starts_per_interval integer check (starts_per_interval is null or starts_per_interval >= 1),
    start_interval_s    double precision not null default 60 check (start_interval_s > 0),
    fairness_weight     integer not null default 1 check (fairness_weight between 1 and 1000),
    -- Cron of this tenant's integration.sync_all (null: the deployment's default).
    sync_schedule       text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);

create table integration (
    id                   text primary key,
    tenant_id            text not null references tenant (id),
    connector            text not null,
    -- Validated by the connector's config model; secrets are secret:// references only.
    config               jsonb not null,
    -- Cron of this integration's syncs (null: the tenant's / connector's default).
    schedule             text,
    status               text not null default 'active'
        check (status in ('active', 'paused', 'needs_attention', 'disabled')),
    -- Failure policy overrides (null: the connector's / deployment's defaults).
    failure_policy       jsonb,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    last_error           jsonb,
    consecutive_failures integer not null default 0,
    -- When the scheduler last enqueued a scheduled sync (its due check reads this).
    last_scheduled_at    timestamptz,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);
create index integration_tenant_status_idx on integration (tenant_id, status);
create index integration_connector_idx on integration (connector);

-- The audit stream: lifecycle events of integrations, in order.
create table integration_event (
    id             bigint generated always as identity primary key,
    integration_id text not null,
    tenant_id      text not null,
    at             timestamptz not null default now(),
    kind           text not null,
    data           jsonb not null default '{}'::jsonb
);
create index integration_event_integration_idx on integration_event (integration_id, id);
create index integration_event_at_idx on integration_event (at);

-- Attention incidents. One open incident per integration (per episode), enforced here.
create table incident (
    id               uuid primary key,
    scope            text not null check (scope in ('integration', 'provider', 'endpoint', 'alert')),
    level            text not null default 'attention' check (level in ('warning', 'attention')),
    status           text not null default 'open' check (status in ('open', 'resolved')),
    tenant_id        text,
    integration_id   text,
    connector        text,
    subject          text,
    parent_id        uuid references incident (id),
    title            text not null,
    last_error       jsonb,
    failing_job_id   uuid,
    failure_count    integer not null default 0,
    first_failure_at timestamptz,
    last_failure_at  timestamptz,
    opened_at        timestamptz not null default now(),
    escalated_at     timestamptz,
    resolved_at      timestamptz,
    resolved_by      text
);
create unique index incident_open_integration_uidx on incident (integration_id)
    where status = 'open' and scope = 'integration';
create unique index incident_open_subject_uidx on incident (scope, subject)
    where status = 'open' and scope <> 'integration';
create index incident_status_idx on incident (status, opened_at);
