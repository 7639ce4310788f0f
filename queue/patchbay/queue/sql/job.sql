-- name: job_insert_many
-- One statement for send and send_many: per-job columns come in as arrays, the policy from
-- the call's options or else the queue's defaults. A job that would break a unique rule (a
-- repeated id; its singleton key's queue policy; its throttle window) is not inserted (see
-- _job_insert). Sends with singleton keys use job_insert_singleton, which also says which
-- job holds each refused key's place; this one stays lean enough for Postgres to keep one
-- generic plan for it (no re-planning per send).
-- refused: a singleton key was sent to a standard queue without a window; nothing was sent.
{_job_insert}
select (select count(*) from q) as queue_found,
       (select count(*) from ins) as inserted,
       (select count(*) from woke) as notified,
       exists (select 1 from refused) as refused;

-- name: job_insert_singleton
-- job_insert_many for sends where some job has a singleton key, returning also:
-- singleton_ids: per job in order, its own id if it was inserted or already existed, else
-- the job that holds its key's place, else null (that job is not in this statement's
-- snapshot: it committed while the insert waited for it; job_find_singleton reads it after).
{_job_insert}
select (select count(*) from q) as queue_found,
       (select count(*) from ins) as inserted,
       (select count(*) from woke) as notified,
       exists (select 1 from refused) as refused,
       (select q.policy from q) as policy,
       {schema}.job_window_start(coalesce(%(now)s, now()), %(throttle_s)s::float8) as singleton_on,
       (select array_agg(
                   case when v.singleton_key is null or i.id is not null then v.id
                   else coalesce(
                       (select j.id from {schema}.job j where j.id = v.id),
                       (select i2.id from ins i2
                        where i2.singleton_key = v.singleton_key limit 1),
                       {_job_singleton_holder})
                   end
                   order by v.ord)
        from unnest(%(ids)s::uuid[], %(singleton_keys)s::text[]) with ordinality
                 as v(id, singleton_key, ord)
        cross join (select q.policy,
                           {schema}.job_window_start(coalesce(%(now)s, now()),
                                                     %(throttle_s)s::float8) as singleton_on
                    from q) as hold
        left join ins i on i.id = v.id
       ) as singleton_ids;

-- name: _job_insert
-- Fragment of job_insert_many and job_insert_singleton: CTEs q (the queue), refused, ins
-- (the inserted jobs) and woke. ON CONFLICT DO NOTHING without a target honours every
-- unique index, and waits for a concurrent sender's uncommitted job first, so a rollback
-- there never leaves a key empty. Wakes listeners once per call when something is
-- runnable now.
with q as (
    select * from {schema}.queue where name = %(queue)s
),
refused as (
    select 1 from q
    where %(singleton_keys)s::text[] is not null and %(throttle_s)s::float8 is null
      and q.policy = 'standard'
),
ins as (
    insert into {schema}.job {_job_insert_columns}
    select {_job_insert_values}
    from q
    cross join unnest(%(ids)s::uuid[], %(data)s::text[], %(priorities)s::int[],
                      %(start_afters)s::timestamptz[], %(singleton_keys)s::text[],
                      %(group_keys)s::text[], %(fairness_keys)s::text[], %(rate_keys)s::text[])
        as v(id, data, priority, start_after, singleton_key, group_key, fairness_key, rate_key)
    where not exists (select 1 from refused)
    on conflict do nothing
    returning id, singleton_key, start_after
),
woke as (
    select pg_notify(%(channel)s, %(queue)s)
    from (select 1 from ins where start_after <= coalesce(%(now)s, now()) limit 1) as runnable
)

-- name: _job_insert_columns
-- Fragment: the job columns a send sets, in the order of _job_insert_values.
(id, queue, priority, data, retry_limit, retry_delay_s, retry_backoff,
 retry_delay_max_s, expire_in_s, dead_letter, start_after, created_at,
 group_key, fairness_key, rate_key, singleton_key, singleton_policy, singleton_on, debounce_on)

-- name: _job_insert_values
-- Fragment: the values of a sent job, from the queue `q` and the job's row `v` (id, data,
-- priority, start_after, singleton_key, and its own group, fairness and rate keys, which
-- override the call's).
v.id, q.name, coalesce(v.priority, %(priority)s, 0), v.data::jsonb,
coalesce(%(retry_limit)s, q.retry_limit),
coalesce(%(retry_delay_s)s, q.retry_delay_s),
coalesce(%(retry_backoff)s, q.retry_backoff),
coalesce(%(retry_delay_max_s)s, q.retry_delay_max_s),
coalesce(%(expire_in_s)s, q.expire_in_s),
coalesce(%(dead_letter)s, q.dead_letter),
coalesce(v.start_after, coalesce(%(now)s, now()) + %(delay_s)s * interval '1 second'),
coalesce(%(now)s, now()),
coalesce(v.group_key, %(group_key)s),
-- Every job of a fair queue has a key ('' when none is given): fair fetch only
-- sees jobs in job_fair_idx, which holds jobs with a key.
case when q.fair then coalesce(v.fairness_key, %(fairness_key)s, '')
     else coalesce(v.fairness_key, %(fairness_key)s) end,
coalesce(v.rate_key, %(rate_key)s),
v.singleton_key,
case when v.singleton_key is not null then q.policy end,
{schema}.job_window_start(coalesce(%(now)s, now()), %(throttle_s)s::float8),
{schema}.job_window_start(coalesce(%(now)s, now()), %(debounce_s)s::float8)

-- name: _job_singleton_holder
-- Fragment: the job holding the place that a keyed send (`v.singleton_key`, with
-- `hold.policy` and the throttle window `hold.singleton_on`) was refused, as far as the
-- snapshot shows: its throttle window's job, else its queue policy's. Each is one probe of
-- one partial unique index.
coalesce(
    (select h.id from {schema}.job h
     where h.queue = %(queue)s and h.singleton_key = v.singleton_key
       and h.singleton_on = hold.singleton_on
       and h.singleton_on is not null and h.state <> 'cancelled'),
    (select h.id from {schema}.job h
     where hold.policy in ('short', 'stately')
       and h.queue = %(queue)s and h.singleton_key = v.singleton_key
       and h.state = 'queued' and h.singleton_policy in ('short', 'stately')),
    (select h.id from {schema}.job h
     where hold.policy = 'exclusive'
       and h.queue = %(queue)s and h.singleton_key = v.singleton_key
       and h.state in ('queued', 'retrying', 'active') and h.singleton_policy = 'exclusive'))

-- name: job_insert_debounced
-- Debounce (every job has a key): the sends of one window collapse into one queued job
-- that starts at the window's end; the latest send's data wins (ON CONFLICT DO UPDATE,
-- which waits for a concurrent sender's uncommitted job, so a rollback there loses
-- nothing committed). Which job a send collapses into follows the queue's policy:
-- standard and singleton: the key's job of this window; short and stately: the key's one
-- queued job; exclusive: the key's one job if it is still queued (one that already runs
-- refuses the send, as it refuses any). Within one call the last item of a key wins.
-- Returns job_insert_many's columns; singleton_ids holds every job's id.
with q as (
    select * from {schema}.queue where name = %(queue)s
),
v as (
    select distinct on (u.singleton_key)
           u.id, u.data, u.priority, u.singleton_key, u.group_key, u.fairness_key, u.rate_key,
           {schema}.job_window_start(coalesce(%(now)s, now()), %(debounce_s)s::float8)
               + %(debounce_s)s::float8 * interval '1 second' as start_after
    from unnest(%(ids)s::uuid[], %(data)s::text[], %(priorities)s::int[],
                %(singleton_keys)s::text[], %(group_keys)s::text[], %(fairness_keys)s::text[],
                %(rate_keys)s::text[])
        with ordinality as u(id, data, priority, singleton_key, group_key, fairness_key,
                             rate_key, ord)
    order by u.singleton_key, u.ord desc
),
by_window as (
    insert into {schema}.job {_job_insert_columns}
    select {_job_insert_values}
    from q cross join v
    where q.policy in ('standard', 'singleton')
    on conflict (queue, singleton_key, debounce_on)
        where debounce_on is not null and state = 'queued'
          and singleton_policy in ('standard', 'singleton')
    do update set data = excluded.data
    returning id, singleton_key
),
by_queued as (
    insert into {schema}.job {_job_insert_columns}
    select {_job_insert_values}
    from q cross join v
    where q.policy in ('short', 'stately')
    on conflict (queue, singleton_key)
        where state = 'queued' and singleton_policy in ('short', 'stately')
    do update set data = excluded.data
    returning id, singleton_key
),
by_exclusive as (
    insert into {schema}.job {_job_insert_columns}
    select {_job_insert_values}
    from q cross join v
    where q.policy = 'exclusive'
    on conflict (queue, singleton_key)
        where state in ('queued', 'retrying', 'active') and singleton_policy = 'exclusive'
    do update set data = excluded.data where {schema}.job.state = 'queued'
    returning id, singleton_key
),
done as (
    select id, singleton_key from by_window
    union all select id, singleton_key from by_queued
    union all select id, singleton_key from by_exclusive
)
select (select count(*) from q) as queue_found,
       (select count(*) from done) as inserted,
       0 as notified,
       false as refused,
       (select q.policy from q) as policy,
       null::timestamptz as singleton_on,
       (select array_agg(
                   coalesce((select d.id from done d where d.singleton_key = v.singleton_key),
                            {_job_singleton_holder})
                   order by v.ord)
        from unnest(%(singleton_keys)s::text[]) with ordinality as v(singleton_key, ord)
        cross join (select q.policy, null::timestamptz as singleton_on from q) as hold
       ) as singleton_ids;

-- name: job_find_singleton
-- The jobs holding the places of keyed sends that job_insert_many refused without seeing
-- the holder (a concurrent sender committed it while the insert waited), read in this
-- statement's newer snapshot; null where none holds it any more.
select array_agg({_job_singleton_holder} order by v.ord) as singleton_ids
from unnest(%(singleton_keys)s::text[]) with ordinality as v(singleton_key, ord)
cross join (select %(policy)s::text as policy,
                   %(singleton_on)s::timestamptz as singleton_on) as hold;

-- name: job_fetch_available
-- Claims up to %(limit)s runnable jobs in dispatch order (priority, then start time).
-- SKIP LOCKED lets any number of workers fetch at once without waiting on each other.
-- Jobs whose group is full or whose rate limit is spent are passed over in the scan, so
-- they neither block the jobs behind them nor take a worker slot. Group slots and rate
-- tokens are claimed in this same statement: limits hold exactly across processes.
with cand as (
    select j.id, j.group_key, j.rate_key, j.priority, j.start_after
    from {schema}.job j
    where j.queue = %(queue)s
      and j.state in ('queued', 'retrying')
      and j.start_after <= coalesce(%(now)s, now())
      and (j.group_key is null or {schema}.job_group_has_room(j.queue, j.group_key))
      and (j.rate_key is null or {schema}.rate_limit_has_tokens(j.rate_key, %(now)s))
      -- One-active singleton keys (0006): only the key's next job, only while none runs.
      and {_job_singleton_turn}
    order by j.priority desc, j.start_after, j.id
    limit %(limit)s
    for update skip locked
),
cursor_key as (select null::text as key),
{_job_claim}

-- name: _job_singleton_turn
-- Fragment (fetch statements, on the candidate `j`): false when `j` has a one-active
-- singleton key (policy singleton or stately) and it is not its turn. A busy key is ruled
-- out by one index probe in the statement's snapshot; job_singleton_turn (0006) decides the
-- rest exactly, so the job_singleton_active_idx unique index never fails the fetch.
(j.singleton_policy is null or j.singleton_policy not in ('singleton', 'stately')
 or (not exists (select 1 from {schema}.job a
                 where a.queue = j.queue and a.singleton_key = j.singleton_key
                   and a.state = 'active' and a.singleton_policy in ('singleton', 'stately'))
     and {schema}.job_singleton_turn(j.id, j.queue, j.singleton_key, %(now)s)))

-- name: _job_claim
-- Fragment shared by the fetch statements (names starting with "_" are fragments): given
-- the locked candidates `cand` and `cursor_key`, spend rate tokens, claim group slots and
-- activate the chosen jobs.
limited as (
    select c.*,
           row_number() over (partition by c.rate_key
                              order by c.priority desc, c.start_after, c.id) as rate_rank
    from cand c
    where c.rate_key is not null
),
bucket as (
    -- Buckets another fetcher holds are skipped: their jobs wait for the next fetch.
    select r.key,
           least(r.capacity::double precision,
                 r.tokens + greatest(0, extract(epoch from coalesce(%(now)s, now()) - r.updated_at))
                            * r.capacity / r.interval_s) as available
    from {schema}.rate_limit r
    where r.key in (select distinct rate_key from limited)
    for update skip locked
),
eligible as (
    select c.id, c.group_key, c.rate_key, c.priority, c.start_after
    from cand c
    where c.rate_key is null
       or not exists (select 1 from {schema}.rate_limit r where r.key = c.rate_key)
    union all
    select l.id, l.group_key, l.rate_key, l.priority, l.start_after
    from limited l
    join bucket b on b.key = l.rate_key
    where l.rate_rank <= floor(b.available)
),
grouped as (
    select e.id, e.group_key,
           row_number() over (partition by e.group_key
                              order by e.priority desc, e.start_after, e.id) as group_rank
    from eligible e
    where e.group_key is not null
),
free_slot as (
    select g.group_key, s.slot,
           row_number() over (partition by g.group_key order by s.slot) as slot_rank
    from (select distinct group_key from grouped) g
    cross join lateral generate_series(
        0, {schema}.job_group_limit_of(%(queue)s, g.group_key) - 1) as s(slot)
    where not exists (
        select 1 from {schema}.job_group_slot t
        where t.queue = %(queue)s and t.group_key = g.group_key and t.slot = s.slot)
),
claimed as (
    insert into {schema}.job_group_slot (queue, group_key, slot, job_id, claimed_at)
    select %(queue)s, g.group_key, f.slot, g.id, coalesce(%(now)s, now())
    from grouped g
    join free_slot f on f.group_key = g.group_key and f.slot_rank = g.group_rank
    order by g.group_key, f.slot
    on conflict do nothing
    returning job_id
),
chosen as (
    select e.id, e.rate_key from eligible e where e.group_key is null
    union all
    select e.id, e.rate_key from eligible e join claimed c on c.job_id = e.id
),
spent as (
    update {schema}.rate_limit r
    set tokens = b.available - n.taken,
        updated_at = coalesce(%(now)s, now())
    from bucket b
    join (select rate_key, count(*) as taken from chosen
          where rate_key is not null group by rate_key) n on n.rate_key = b.key
    where r.key = b.key
    returning r.key
)
update {schema}.job j
set state = 'active',
    attempt = j.attempt + 1,
    started_at = coalesce(%(now)s, now()),
    lease_expires_at = coalesce(%(now)s, now()) + j.expire_in_s * interval '1 second'
from chosen
where j.id = chosen.id
returning j.id, j.data, j.attempt, j.priority, j.retry_limit, j.expire_in_s, j.created_at,
          (select key from cursor_key) as cursor_key

-- name: job_fetch_fair
-- Fair dispatch: walks the fairness keys that have backlog with a skip scan (one index
-- probe per key, whatever the backlog's size), starting after the key the previous fetch
-- of this worker ended on and wrapping around, at most %(max_keys)s keys. Each key offers
-- its first jobs in dispatch order, as many as its share of %(limit)s times its weight;
-- turns interleave keys round-robin. Group and rate limits apply as in
-- job_fetch_available. Every row carries the key to start after next time.
with recursive keys_after (fairness_key, pos) as (
    (select j.fairness_key, 1
     from {schema}.job j
     where j.queue = %(queue)s and j.state in ('queued', 'retrying')
       and j.fairness_key is not null
       and (%(after)s::text is null or j.fairness_key > %(after)s::text)
     order by j.fairness_key
     limit 1)
    union all
    select (select j.fairness_key
            from {schema}.job j
            where j.queue = %(queue)s and j.state in ('queued', 'retrying')
              and j.fairness_key > k.fairness_key
            order by j.fairness_key
            limit 1),
           k.pos + 1
    from keys_after k
    where k.fairness_key is not null and k.pos < %(max_keys)s
),
keys_wrap (fairness_key, pos) as (
    (select j.fairness_key, 1
     from {schema}.job j
     where %(after)s::text is not null
       and j.queue = %(queue)s and j.state in ('queued', 'retrying')
       and j.fairness_key is not null and j.fairness_key <= %(after)s::text
     order by j.fairness_key
     limit 1)
    union all
    select (select j.fairness_key
            from {schema}.job j
            where j.queue = %(queue)s and j.state in ('queued', 'retrying')
              and j.fairness_key > k.fairness_key and j.fairness_key <= %(after)s::text
            order by j.fairness_key
            limit 1),
           k.pos + 1
    from keys_wrap k
    where k.fairness_key is not null and k.pos < %(max_keys)s
),
turn_keys as (
    select fairness_key, pos,
           coalesce((select w.weight from {schema}.fairness_weight w
                     where w.queue = %(queue)s and w.fairness_key = u.fairness_key), 1) as weight
    from (select fairness_key, pos from keys_after where fairness_key is not null
          union all
          select fairness_key, %(max_keys)s + pos from keys_wrap
          where fairness_key is not null) u
    order by pos
    limit %(max_keys)s
),
share as (
    select greatest(1, ceil(%(limit)s::numeric / greatest(count(*), 1)))::int as per_key
    from turn_keys
),
offered as (
    select k.pos, k.weight, c.*
    from turn_keys k
    cross join share
    cross join lateral (
        select j.id, j.group_key, j.rate_key, j.priority, j.start_after, j.fairness_key
        from {schema}.job j
        where j.queue = %(queue)s
          and j.fairness_key = k.fairness_key
          and j.state in ('queued', 'retrying')
          and j.start_after <= coalesce(%(now)s, now())
          and (j.group_key is null or {schema}.job_group_has_room(j.queue, j.group_key))
          and (j.rate_key is null or {schema}.rate_limit_has_tokens(j.rate_key, %(now)s))
          and {_job_singleton_turn}
        order by j.priority desc, j.start_after, j.id
        limit share.per_key * k.weight
        for update skip locked
    ) c
),
cand as (
    select o.id, o.group_key, o.rate_key, o.priority, o.start_after
    from (select o.*,
                 (row_number() over (partition by o.fairness_key
                                     order by o.priority desc, o.start_after, o.id) - 1)
                 / o.weight as turn
          from offered o) o
    order by o.turn, o.pos
    limit %(limit)s
),
cursor_key as (select fairness_key as key from turn_keys order by pos desc limit 1),
{_job_claim}

-- name: job_complete_many
-- Fenced by attempt: a worker that lost its lease cannot overwrite a newer attempt.
-- The input is an OFFSET 0 subquery carrying the expected state, so the state test is a
-- join condition: a generic plan (prepared statements) then probes the primary key per
-- input row instead of scanning every active job and rescanning the input per job,
-- which grew with the square of the batch.
update {schema}.job j
set state = 'completed',
    output = t.output::jsonb,
    finished_at = coalesce(%(now)s, now()),
    lease_expires_at = null
from (select u.id, u.attempt, u.output, 'active'::{schema}.job_state as state
      from unnest(%(ids)s::uuid[], %(attempts)s::int[], %(outputs)s::text[])
          as u(id, attempt, output)
      offset 0) as t
where j.id = t.id and j.attempt = t.attempt and j.state = t.state
returning j.id;

-- name: job_fail_many
-- A failed attempt is retried after its backoff while attempts remain; the last one moves
-- the job to failed and copies it to its dead-letter queue, in the same statement. Every
-- failed attempt is appended to job_event (the _job_dead_letter fragment). A failure
-- marked final (the handler's exception said retryable = False) skips the retries left.
with t as (
    select * from unnest(%(ids)s::uuid[], %(attempts)s::int[], %(errors)s::text[],
                         %(finals)s::bool[])
        as t(id, attempt, error, final)
),
failures as (
    update {schema}.job j
    set state = case when j.attempt <= j.retry_limit and not t.final then 'retrying'::{schema}.job_state
                     else 'failed'::{schema}.job_state end,
        error = t.error::jsonb,
        start_after = case when j.attempt <= j.retry_limit and not t.final
                           then coalesce(%(now)s, now()) + {schema}.job_retry_delay_s(
                               j.retry_delay_s, j.retry_backoff, j.retry_delay_max_s, j.attempt
                           ) * interval '1 second'
                           else j.start_after end,
        finished_at = case when j.attempt <= j.retry_limit and not t.final then null
                           else coalesce(%(now)s, now()) end,
        lease_expires_at = null
    from t
    where j.id = t.id and j.attempt = t.attempt and j.state = 'active'
    returning j.id, j.queue, j.state, 'active'::{schema}.job_state as from_state,
              j.state::text as kind, j.data, j.priority, j.dead_letter, j.start_after,
              j.fairness_key, j.error, j.attempt
),
woke as (
    select pg_notify(%(channel)s, f.queue)
    from failures f
    where f.state = 'retrying' and f.start_after <= coalesce(%(now)s, now())
    group by f.queue
),
{_job_dead_letter}
select f.id, f.state::text as state, (select count(*) from dead) as dead_lettered,
       (select count(*) from woke) + (select count(*) from dead_woke) as notified
from failures f;

-- name: job_release_many
-- Graceful shutdown (delay 0) and Snooze (delay > 0): jobs go back to the queue without
-- spending an attempt, to run again after their delay.
-- A job of a one-queued singleton key (short, stately) goes back as retrying: a newer job
-- of its key may be queued, and the key's unique index allows one queued job.
update {schema}.job j
set state = case when j.singleton_policy in ('short', 'stately') then 'retrying'
                 else 'queued' end::{schema}.job_state,
    attempt = j.attempt - 1,
    started_at = null,
    lease_expires_at = null,
    start_after = case when t.delay_s > 0
                       then coalesce(%(now)s, now()) + t.delay_s * interval '1 second'
                       else j.start_after end
from unnest(%(ids)s::uuid[], %(attempts)s::int[], %(delays)s::float8[])
    as t(id, attempt, delay_s)
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
       start_after, lease_expires_at, created_at, started_at, finished_at,
       progress, origin_queue, origin_id
from {schema}.job
where id = %(id)s;

-- name: job_list
-- Keyset paging, newest first: pass the last row's (created_at, id) to get the next page.
select id, queue, state::text as state, priority, data, output, error, attempt, retry_limit,
       retry_delay_s, retry_backoff, retry_delay_max_s, expire_in_s, dead_letter,
       start_after, lease_expires_at, created_at, started_at, finished_at,
       progress, origin_queue, origin_id
from {schema}.job
where (%(queue)s::text is null or queue = %(queue)s::text)
  and (%(state)s::text is null or state = %(state)s::text::{schema}.job_state)
  and (%(before_created_at)s::timestamptz is null
       or (created_at, id) < (%(before_created_at)s::timestamptz, %(before_id)s::uuid))
order by created_at desc, id desc
limit %(limit)s;

-- name: job_cancel
-- Appends a 'cancelled' event when the queue records events.
with prev as (
    select j.id, j.state
    from {schema}.job j
    where j.id = %(id)s and j.state in ('queued', 'retrying', 'active')
    for update
),
upd as (
    update {schema}.job j
    set state = 'cancelled', finished_at = coalesce(%(now)s, now()), lease_expires_at = null
    from prev
    where j.id = prev.id
    returning j.id, j.queue, j.attempt, prev.state as from_state
),
logged as (
    insert into {schema}.job_event (job_id, queue, at, kind, from_state, to_state, attempt)
    select u.id, u.queue, coalesce(%(now)s, now()), 'cancelled', u.from_state, 'cancelled',
           u.attempt
    from upd u
    join {schema}.queue q on q.name = u.queue
    where q.events
)
select id from upd;

-- name: job_requeue
-- resume (cancelled) and retry (failed): run again now with a fresh retry budget. The
-- attempt counter never goes down, so attempt fencing stays sound. Appends a 'requeued'
-- event when the queue records events.
with prev as (
    select j.id, j.state
    from {schema}.job j
    where j.id = %(id)s and j.state::text = any(%(from_states)s::text[])
    for update
),
upd as (
    update {schema}.job j
    set state = 'queued',
        retry_limit = j.attempt + coalesce(
            (select q.retry_limit from {schema}.queue q where q.name = j.queue), j.retry_limit),
        start_after = coalesce(%(now)s, now()),
        finished_at = null,
        lease_expires_at = null
    from prev
    where j.id = prev.id
    returning j.id, j.queue, j.attempt, prev.state as from_state
),
woke as (select pg_notify(%(channel)s, upd.queue) from upd),
logged as (
    insert into {schema}.job_event (job_id, queue, at, kind, from_state, to_state, attempt)
    select u.id, u.queue, coalesce(%(now)s, now()), 'requeued', u.from_state, 'queued',
           u.attempt
    from upd u
    join {schema}.queue q on q.name = u.queue
    where q.events
)
select upd.id, (select count(*) from woke) as notified from upd;

-- name: job_delete
-- The job's events go with it.
with gone as (delete from {schema}.job where id = %(id)s returning id),
events_gone as (delete from {schema}.job_event e using gone where e.job_id = gone.id)
select id from gone;

-- name: job_state_of
select state::text as state from {schema}.job where id = %(id)s;
