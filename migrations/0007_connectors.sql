-- Connector SDK: per-integration cursor state, emitted records, backfills.

-- The cursor state of one job type of one integration; written in the same transaction as
-- the records it accounts for.
create table connector_state (
    integration_id text not null,
    job_type       text not null,
    state          jsonb not null,
    state_version  integer not null,
    updated_at     timestamptz not null default now(),
    primary key (integration_id, job_type)
);

-- The default destination: records upserted by (integration, stream, external id), so
-- writing a page twice changes nothing.
create table connector_record (
    integration_id text not null,
    stream         text not null,
    external_id    text not null,
    data           jsonb not null,
    first_seen_at  timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    primary key (integration_id, stream, external_id)
);

-- A backfill: a range split into windows, each window a child job.
create table connector_backfill (
    id             uuid primary key,
    tenant         text not null,
    integration_id text not null,
    connector      text not null,
    job_type       text not null,
    range_start    timestamptz not null,
    range_end      timestamptz not null,
    window_s       double precision not null check (window_s > 0),
    windows_total  integer not null check (windows_total >= 1),
    windows_done   integer not null default 0,
    status         text not null default 'running'
        check (status in ('running', 'completed', 'cancelled')),
    created_at     timestamptz not null default now(),
    completed_at   timestamptz
);
create index connector_backfill_integration_idx on connector_backfill (integration_id);

-- One row per window; done_at is set in the transaction that writes the window's records.
create table connector_backfill_window (
    backfill_id  uuid not null references connector_backfill (id) on delete cascade,
    window_index integer not null,
    window_start timestamptz not null,
    window_end   timestamptz not null,
    job_id       uuid,
    done_at      timestamptz,
    primary key (backfill_id, window_index)
);
