-- Cron schedules (patchbay.queue.schedules): a schedule per row, and a row per handled
-- (schedule, fire time). Applied with search_path set to the patchbay schema.

-- next_fire_at is the first fire not yet handled; a tick claims it by compare-and-set on
-- (revision, next_fire_at), and every edit bumps revision, so a tick that read a row
-- before an edit cannot act on it after. Deleting a queue deletes its schedules, as it
-- deletes its jobs.
create table schedule (
    name          text primary key,
    cron          text not null,
    tz            text not null default 'UTC',
    queue         text not null references queue (name) on delete cascade,
    data          jsonb not null default 'null',
    options       jsonb not null default '{}' check (jsonb_typeof(options) = 'object'),
    catch_up      boolean not null default false,
    next_fire_at  timestamptz not null,
    last_fire_at  timestamptz,
    last_job_id   uuid,
    revision      bigint not null default 1 check (revision > 0),
    created_at    timestamptz not null,
    updated_at    timestamptz not null
);

-- Ticks read only the due schedules.
create index schedule_next_fire_idx on schedule (next_fire_at);

create index schedule_queue_idx on schedule (queue);

-- The exactly-once rule: one row per (schedule, fire time), inserted in the same
-- transaction as the fire's job, so however many daemons tick, each fire is enqueued
-- once. job_id is null when the fire was skipped (missed while no daemon ran, catch-up
-- off); covers_from is the earliest fire this row stands for (= fire_at unless fires were
-- missed). No foreign key: the rows outlive an unschedule, so re-creating a schedule of
-- the same name cannot fire a time again; ticks prune them after a retention period.
create table schedule_fire (
    schedule     text not null,
    fire_at      timestamptz not null,
    covers_from  timestamptz not null,
    job_id       uuid,
    fired_at     timestamptz not null,
    constraint schedule_fire_once primary key (schedule, fire_at),
    check (covers_from <= fire_at)
);

create index schedule_fire_fire_at_idx on schedule_fire (fire_at);
