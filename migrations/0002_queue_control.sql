-- Queue control: group concurrency, fair dispatch, rate limits.

-- group_limit: default number of jobs of one group that may be active at once.
-- fair: fetch serves fairness keys round-robin instead of strict dispatch order.
alter table queue
    add column group_limit integer not null default 1 check (group_limit >= 1),
    add column fair boolean not null default false;

alter table job
    add column group_key text,
    add column fairness_key text,
    add column rate_key text;

-- Per-group overrides of the queue's group_limit.
create table job_group_limit (
    queue       text not null,
    group_key   text not null,
    max_active  integer not null check (max_active >= 1),
    primary key (queue, group_key)
);

-- One row per active job of a group, numbered 0..limit-1. The primary key makes the group
-- limit exact: two fetchers claiming the same slot conflict, and ON CONFLICT DO NOTHING
-- leaves the loser's job queued. A trigger frees the slot when the job leaves 'active'.
create table job_group_slot (
    queue      text not null,
    group_key  text not null,
    slot       integer not null,
    job_id     uuid not null,
    claimed_at timestamptz not null default now(),
    primary key (queue, group_key, slot)
);
create index job_group_slot_job_idx on job_group_slot (job_id);

-- search_path is pinned at creation: the trigger fires under the caller's search_path.
create function job_group_slot_release() returns trigger
language plpgsql
set search_path from current
as $$
begin
    delete from job_group_slot where job_id = old.id;
    return null;
end
$$;

create trigger job_group_slot_release_on_update
    after update of state on job
    for each row
    when (old.state = 'active' and new.state <> 'active' and old.group_key is not null)
    execute function job_group_slot_release();

create trigger job_group_slot_release_on_delete
    after delete on job
    for each row
    when (old.state = 'active' and old.group_key is not null)
    execute function job_group_slot_release();

-- Fair fetch walks fairness keys with a skip scan, then each key's jobs in dispatch order.
-- Only jobs that carry a fairness key are in it (every job of a fair queue does).
create index job_fair_idx on job (queue, fairness_key, priority desc, start_after, id)
    where state in ('queued', 'retrying') and fairness_key is not null;

-- Weights of fairness keys (default 1): a key of weight w gets w turns per round.
create table fairness_weight (
    queue        text not null,
    fairness_key text not null,
    weight       integer not null check (weight between 1 and 1000),
    primary key (queue, fairness_key)
);

-- Rate limits: a token bucket per key, shared by every process. ``capacity`` starts are
-- allowed per ``interval_s``; tokens refill continuously.
create table rate_limit (
    key        text primary key,
    capacity   integer not null check (capacity >= 1),
    interval_s double precision not null check (interval_s > 0),
    tokens     double precision not null,
    updated_at timestamptz not null default now()
);

-- The limit of one group: its override, else its queue's default.
create function job_group_limit_of(p_queue text, p_group text) returns integer
language sql stable
set search_path from current
as $$
    select coalesce(
        (select l.max_active from job_group_limit l
         where l.queue = p_queue and l.group_key = p_group),
        (select q.group_limit from queue q where q.name = p_queue),
        1)
$$;

-- Whether a group has a free slot (read from the statement's snapshot: the slot's primary
-- key, not this check, is what keeps the limit exact).
create function job_group_has_room(p_queue text, p_group text) returns boolean
language sql stable
set search_path from current
as $$
    select (select count(*) from job_group_slot s
            where s.queue = p_queue and s.group_key = p_group)
           < job_group_limit_of(p_queue, p_group)
$$;

-- Whether a rate limit has a whole token at ``p_now`` (unknown keys are unlimited).
create function rate_limit_has_tokens(p_key text, p_now timestamptz) returns boolean
language sql stable
set search_path from current
as $$
    select coalesce(
        (select least(r.capacity::double precision,
                      r.tokens + greatest(0, extract(epoch from coalesce(p_now, now())
                                                     - r.updated_at))
                                 * r.capacity / r.interval_s) >= 1
         from rate_limit r where r.key = p_key),
        true)
$$;
