-- name: job_insert_many
-- One statement for send and send_many: per-job columns come in as arrays, the policy from
-- the call's options or else the queue's defaults. A repeated id is not a second job.
-- Wakes listeners once per call when something is runnable now.
with q as (
    select * from {schema}.queue where name = %(queue)s
),
ins as (
    insert into {schema}.job
        (id, queue, priority, data, retry_limit, retry_delay_s, retry_backoff,
         retry_delay_max_s, expire_in_s, dead_letter, start_after, created_at)
    select v.id, q.name, coalesce(v.priority, %(priority)s, 0), v.data::jsonb,
           coalesce(%(retry_limit)s, q.retry_limit),
           coalesce(%(retry_delay_s)s, q.retry_delay_s),
           coalesce(%(retry_backoff)s, q.retry_backoff),
           coalesce(%(retry_delay_max_s)s, q.retry_delay_max_s),
           coalesce(%(expire_in_s)s, q.expire_in_s),
           coalesce(%(dead_letter)s, q.dead_letter),
           coalesce(v.start_after, coalesce(%(now)s, now()) + %(delay_s)s * interval '1 second'),
           coalesce(%(now)s, now())
    from q
    cross join unnest(%(ids)s::uuid[], %(data)s::text[], %(priorities)s::int[],
                      %(start_afters)s::timestamptz[]) as v(id, data, priority, start_after)
    on conflict (id) do nothing
    returning start_after
),
woke as (
    select pg_notify(%(channel)s, %(queue)s)
    from (select 1 from ins where start_after <= coalesce(%(now)s, now()) limit 1) as runnable
)
select (select count(*) from q) as queue_found,
       (select count(*) from ins) as inserted,
       (select count(*) from woke) as notified;

-- name: job_fetch_available
-- Claims up to %(limit)s runnable jobs in dispatch order; SKIP LOCKED lets any number of
-- workers fetch at once without waiting on each other.
with next as (
    select id
    from {schema}.job
    where queue = %(queue)s
      and state in ('queued', 'retrying')
      and start_after <= coalesce(%(now)s, now())
    order by priority desc, start_after, id
    limit %(limit)s
    for update skip locked
)
update {schema}.job j
set state = 'active',
    attempt = j.attempt + 1,
    started_at = coalesce(%(now)s, now()),
    lease_expires_at = coalesce(%(now)s, now()) + j.expire_in_s * interval '1 second'
from next
where j.id = next.id
returning j.id, j.data, j.attempt, j.priority, j.retry_limit, j.expire_in_s, j.created_at;

-- name: job_complete_many
-- Fenced by attempt: a worker that lost its lease cannot overwrite a newer attempt.
update {schema}.job j
set state = 'completed',
    output = t.output::jsonb,
    finished_at = coalesce(%(now)s, now()),
    lease_expires_at = null
from unnest(%(ids)s::uuid[], %(attempts)s::int[], %(outputs)s::text[]) as t(id, attempt, output)
where j.id = t.id and j.attempt = t.attempt and j.state = 'active'
returning j.id;

-- name: job_fail_many
-- A failed attempt is retried after its backoff while attempts remain; the last one moves
-- the job to failed and copies it to its dead-letter queue, in the same statement.
with t as (
    select * from unnest(%(ids)s::uuid[], %(attempts)s::int[], %(errors)s::text[])
        as t(id, attempt, error)
),
failed as (
    update {schema}.job j
    set state = case when j.attempt <= j.retry_limit then 'retrying'::{schema}.job_state
                     else 'failed'::{schema}.job_state end,
        error = t.error::jsonb,
        start_after = case when j.attempt <= j.retry_limit
                           then coalesce(%(now)s, now()) + {schema}.job_retry_delay_s(
                               j.retry_delay_s, j.retry_backoff, j.retry_delay_max_s, j.attempt
                           ) * interval '1 second'
                           else j.start_after end,
        finished_at = case when j.attempt <= j.retry_limit then null
                           else coalesce(%(now)s, now()) end,
        lease_expires_at = null
    from t
    where j.id = t.id and j.attempt = t.attempt and j.state = 'active'
    returning j.id, j.queue, j.state, j.data, j.priority, j.dead_letter, j.start_after
),
woke as (
    select pg_notify(%(channel)s, f.queue)
    from failed f
    where f.state = 'retrying' and f.start_after <= coalesce(%(now)s, now())
    group by f.queue
),
dead as (
    insert into {schema}.job
        (id, queue, priority, data, retry_limit, retry_delay_s, retry_backoff,
         retry_delay_max_s, expire_in_s, dead_letter, start_after, created_at)
    select gen_random_uuid(), q.name, f.priority, f.data, q.retry_limit, q.retry_delay_s,
           q.retry_backoff, q.retry_delay_max_s, q.expire_in_s, q.dead_letter,
           coalesce(%(now)s, now()), coalesce(%(now)s, now())
    from failed f
    join {schema}.queue q on q.name = f.dead_letter
    where f.state = 'failed'
    returning id
)
select f.id, f.state::text as state, (select count(*) from dead) as dead_lettered,
       (select count(*) from woke) as notified
from failed f;

-- name: job_release_many
-- Graceful shutdown: interrupted jobs go back to the queue without spending an attempt.
update {schema}.job j
set state = 'queued',
    attempt = j.attempt - 1,
    started_at = null,
    lease_expires_at = null
from unnest(%(ids)s::uuid[], %(attempts)s::int[]) as t(id, attempt)
where j.id = t.id and j.attempt = t.attempt and j.state = 'active'
returning j.id;

-- name: job_heartbeat_many
update {schema}.job j
set lease_expires_at = coalesce(%(now)s, now()) + j.expire_in_s * interval '1 second'
from unnest(%(ids)s::uuid[], %(attempts)s::int[]) as t(id, attempt)
where j.id = t.id and j.attempt = t.attempt and j.state = 'active'
returning j.id, j.lease_expires_at;

-- name: job_find_expired_leases
select id, attempt
from {schema}.job
where state = 'active' and lease_expires_at < coalesce(%(now)s, now())
order by lease_expires_at
limit %(limit)s;

-- name: job_get
select id, queue, state::text as state, priority, data, output, error, attempt, retry_limit,
       retry_delay_s, retry_backoff, retry_delay_max_s, expire_in_s, dead_letter,
       start_after, lease_expires_at, created_at, started_at, finished_at
from {schema}.job
where id = %(id)s;

-- name: job_list
-- Keyset paging, newest first: pass the last row's (created_at, id) to get the next page.
select id, queue, state::text as state, priority, data, output, error, attempt, retry_limit,
       retry_delay_s, retry_backoff, retry_delay_max_s, expire_in_s, dead_letter,
       start_after, lease_expires_at, created_at, started_at, finished_at
from {schema}.job
where (%(queue)s::text is null or queue = %(queue)s::text)
  and (%(state)s::text is null or state = %(state)s::text::{schema}.job_state)
  and (%(before_created_at)s::timestamptz is null
       or (created_at, id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
order by created_at desc, id desc
limit %(limit)s;

-- name: job_cancel
update {schema}.job
set state = 'cancelled', finished_at = coalesce(%(now)s, now()), lease_expires_at = null
where id = %(id)s and state in ('queued', 'retrying', 'active')
returning id;

-- name: job_requeue
-- resume (cancelled) and retry (failed): run again now with a fresh retry budget. The
-- attempt counter never goes down, so attempt fencing stays sound.
with upd as (
    update {schema}.job j
    set state = 'queued',
        retry_limit = j.attempt + coalesce(
            (select q.retry_limit from {schema}.queue q where q.name = j.queue), j.retry_limit),
        start_after = coalesce(%(now)s, now()),
        finished_at = null,
        lease_expires_at = null
    where j.id = %(id)s and j.state::text = any(%(from_states)s::text[])
    returning j.id, j.queue
),
woke as (select pg_notify(%(channel)s, upd.queue) from upd)
select upd.id, (select count(*) from woke) as notified from upd;

-- name: job_delete
delete from {schema}.job where id = %(id)s returning id;

-- name: job_state_of
select state::text as state from {schema}.job where id = %(id)s;
