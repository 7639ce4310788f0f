-- Queue core: queues, jobs and their states.
-- Applied with search_path set to the patchbay schema; names are unqualified on purpose.

create type job_state as enum ('queued', 'retrying', 'active', 'completed', 'failed', 'cancelled');

create table queue (
    name              text primary key,
    retry_limit       integer not null default 2 check (retry_limit >= 0),
    retry_delay_s     double precision not null default 0 check (retry_delay_s >= 0),
    retry_backoff     boolean not null default true,
    retry_delay_max_s double precision check (retry_delay_max_s is null or retry_delay_max_s >= 0),
    expire_in_s       double precision not null default 900 check (expire_in_s > 0),
    retention_s       double precision not null default 1209600 check (retention_s >= 0),
    dead_letter       text references queue (name) on delete set null,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

-- Each job row carries its own copy of the retry and lease policy taken at send time, so
-- fetch, fail and lease expiry never join the queue table on the hot path.
-- fillfactor leaves room on each page for the row versions that fetch and complete write.
create table job (
    id                uuid primary key,
    queue             text not null,
    state             job_state not null default 'queued',
    priority          integer not null default 0,
    data              jsonb not null,
    output            jsonb,
    error             jsonb,
    attempt           integer not null default 0,
    retry_limit       integer not null,
    retry_delay_s     double precision not null,
    retry_backoff     boolean not null,
    retry_delay_max_s double precision,
    expire_in_s       double precision not null,
    dead_letter       text,
    start_after       timestamptz not null,
    lease_expires_at  timestamptz,
    created_at        timestamptz not null,
    started_at        timestamptz,
    finished_at       timestamptz
) with (fillfactor = 85);

-- Fetch walks this index in dispatch order; it only holds runnable-or-deferred jobs, so
-- its size follows the backlog, not the history (completed rows are not in it).
create index job_fetch_idx on job (queue, priority desc, start_after, id)
    where state in ('queued', 'retrying');

-- Lease expiry scans only active jobs.
create index job_lease_idx on job (lease_expires_at) where state = 'active';

-- Listing and stats by queue and state.
create index job_queue_state_idx on job (queue, state, created_at);

-- Delay before retry n (n = the attempt that just failed, from 1): the base delay, doubled
-- per attempt with backoff, jittered by +-20% so retries of a burst spread out, then capped.
create function job_retry_delay_s(
    base double precision, backoff boolean, cap double precision, attempt integer
) returns double precision
language sql volatile
as $$
    select case
        when not backoff then base
        else least(
            coalesce(cap, 'infinity'::double precision),
            base * power(2::double precision, least(greatest(attempt - 1, 0), 60))
                 * (0.8 + random() * 0.4)
        )
    end
$$;
