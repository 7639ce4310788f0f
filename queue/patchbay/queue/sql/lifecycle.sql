-- The end of a job's life: retention, expiry of jobs that waited too long, dead-letter
-- copies and their redrive, and handler progress. Maintenance runs the first two in
-- batches, under its advisory lock.

-- name: job_delete_retained
-- Retention: deletes finished jobs whose queue's retention has passed since they finished,
-- with their events, at most %(limit)s per queue and in all. Each queue's jobs are read
-- from job_retention_idx oldest first, so a batch costs what it deletes. Locked rows are
-- skipped (an operator retrying a failed job wins); the state is checked on the locked row.
-- The delete finds the rows by ctid, stable while they are locked, which spares it one
-- primary key probe per row.
with doomed as (
    select d.ctid as tid
    from {schema}.queue q
    cross join lateral (
        select j.ctid
        from {schema}.job j
        where j.queue = q.name
          and j.state in ('completed', 'failed', 'cancelled')
          and j.finished_at < coalesce(%(now)s, now()) - q.retention_s * interval '1 second'
        order by j.finished_at
        limit %(limit)s
        for update of j skip locked
    ) d
    limit %(limit)s
),
gone as (
    delete from {schema}.job j
    using doomed
    where j.ctid = doomed.tid
    returning j.id
),
events_gone as (
    delete from {schema}.job_event e
    using gone
    where e.job_id = gone.id
    returning 1
)
select (select count(*) from gone) as deleted,
       (select count(*) from events_gone) as events_deleted;

-- name: job_expire_queued
-- Max queued age: a queued or retrying job that has been runnable for longer than its
-- queue's max_queued_age without starting fails (error type MaxQueuedAgeExceeded), is
-- dead-lettered like any final failure, and its failure is always recorded as an event.
-- "Runnable since" is the later of created_at and start_after, so a deferred job's wait
-- starts when it falls due. Oldest first: per queue and state, an index scan of
-- job_queue_state_idx in created_at order (a cutoff the rule implies), checking start_after
-- per row, that stops at the batch's limit however large the backlog. The update finds the
-- locked rows by ctid.
with doomed as (
    select d.ctid as tid, d.state as from_state, q.max_queued_age_s
    from {schema}.queue q
    cross join unnest(array['queued', 'retrying']::{schema}.job_state[]) as s(state)
    cross join lateral (
        select j.ctid, j.state
        from {schema}.job j
        where j.queue = q.name
          and j.state = s.state
          and j.created_at
              < coalesce(%(now)s, now()) - q.max_queued_age_s * interval '1 second'
          and j.start_after
              < coalesce(%(now)s, now()) - q.max_queued_age_s * interval '1 second'
        order by j.created_at
        limit %(limit)s
        for update of j skip locked
    ) d
    where q.max_queued_age_s is not null
    limit %(limit)s
),
failures as (
    update {schema}.job j
    set state = 'failed',
        error = jsonb_build_object(
            'type', 'patchbay.queue.MaxQueuedAgeExceeded',
            'message', 'the job waited '
                || round(extract(epoch from coalesce(%(now)s, now())
                                            - greatest(j.created_at, j.start_after)))::text
                || 's to start, longer than its queue''s max_queued_age of '
                || trim_scale(d.max_queued_age_s::numeric)::text
                || 's, so it expired without running',
            'traceback', ''),
        finished_at = coalesce(%(now)s, now()),
        lease_expires_at = null
    from doomed d
    where j.ctid = d.tid
    returning j.id, j.queue, j.state, d.from_state, 'expired'::text as kind, j.data,
              j.priority, j.dead_letter, j.fairness_key, j.error, j.attempt
),
{_job_dead_letter}
select (select count(*) from failures) as expired,
       (select count(*) from dead) as dead_lettered,
       (select count(*) from dead_woke) as notified;

-- name: _job_dead_letter
-- Fragment (job_fail_many, job_expire_queued): given `failures` (the jobs a statement just
-- failed or retried, with their previous state and event kind), copies each final failure
-- to its dead-letter queue (recording where it came from, its last error and its fairness
-- key), wakes those queues, and appends every failure to job_event: always, whatever the
-- queue's `events` setting. A copy's own 'created' event is recorded when its queue has
-- events on. The statement must read dead_woke for the wake-up to happen.
dead as (
    insert into {schema}.job
        (id, queue, priority, data, error, retry_limit, retry_delay_s, retry_backoff,
         retry_delay_max_s, expire_in_s, dead_letter, start_after, created_at,
         fairness_key, origin_queue, origin_id)
    select gen_random_uuid(), q.name, f.priority, f.data, f.error, q.retry_limit,
           q.retry_delay_s, q.retry_backoff, q.retry_delay_max_s, q.expire_in_s,
           q.dead_letter, coalesce(%(now)s, now()), coalesce(%(now)s, now()),
           case when q.fair then coalesce(f.fairness_key, '') else f.fairness_key end,
           f.queue, f.id
    from failures f
    join {schema}.queue q on q.name = f.dead_letter
    where f.state = 'failed'
    returning id, queue, origin_queue, origin_id, created_at
),
dead_woke as (
    select pg_notify(%(channel)s, d.queue)
    from (select distinct queue from dead) d
),
logged as (
    insert into {schema}.job_event
        (job_id, queue, at, kind, from_state, to_state, attempt, data)
    select f.id, f.queue, coalesce(%(now)s, now()), f.kind, f.from_state, f.state, f.attempt,
           case when d.id is null then jsonb_build_object('error', f.error)
                else jsonb_build_object(
                    'error', f.error,
                    'dead_letter', jsonb_build_object('queue', d.queue, 'id', d.id))
           end
    from failures f
    left join dead d on d.origin_id = f.id
    union all
    select d.id, d.queue, d.created_at, 'created', null, 'queued', 0,
           jsonb_build_object('origin_queue', d.origin_queue, 'origin_id', d.origin_id)
    from dead d
    join {schema}.queue q on q.name = d.queue
    where q.events
)

-- name: job_progress_set
-- A handler's progress. Fenced by attempt only, not by state: the last value reported
-- lands even when it is written just after the job finished, never on a newer attempt.
update {schema}.job
set progress = %(progress)s::jsonb
where id = %(id)s and attempt = %(attempt)s;

-- name: job_redrive_lock
-- Redrive by id: locks the named jobs and says, for each that exists, whether it can be
-- redriven (the caller checks every id before anything moves).
select j.id, j.queue, j.state::text as state, j.origin_queue,
       exists (select 1 from {schema}.queue q where q.name = j.origin_queue) as origin_exists
from {schema}.job j
where j.id = any(%(ids)s::uuid[])
for update of j;

-- name: job_redrive_many
-- Moves dead-letter copies (of %(queue)s; all, or those in %(ids)s) back to the queues they
-- came from, at most %(limit)s: queued now, with the source queue's current retry, lease
-- and dead-letter policy and a fresh retry budget (the attempt counter never goes down, so
-- fencing stays sound). The group and rate keys come back from the original job when it
-- still exists. Active copies are left alone, as are copies whose source queue is gone.
with pick as (
    select c.id, c.state as from_state, c.queue as from_queue, c.origin_queue, c.origin_id
    from {schema}.job c
    where c.queue = %(queue)s
      and c.origin_queue is not null
      and c.state in ('queued', 'retrying', 'completed', 'failed', 'cancelled')
      and (%(ids)s::uuid[] is null or c.id = any(%(ids)s::uuid[]))
      and exists (select 1 from {schema}.queue q where q.name = c.origin_queue)
    order by c.created_at, c.id
    limit %(limit)s
    for update of c skip locked
),
moved as (
    update {schema}.job j
    set queue = oq.name,
        state = 'queued',
        retry_limit = j.attempt + oq.retry_limit,
        retry_delay_s = oq.retry_delay_s,
        retry_backoff = oq.retry_backoff,
        retry_delay_max_s = oq.retry_delay_max_s,
        expire_in_s = oq.expire_in_s,
        dead_letter = oq.dead_letter,
        start_after = coalesce(%(now)s, now()),
        started_at = null,
        finished_at = null,
        lease_expires_at = null,
        output = null,
        progress = null,
        group_key = orig.group_key,
        rate_key = orig.rate_key,
        fairness_key = case when oq.fair then coalesce(j.fairness_key, '')
                            else j.fairness_key end
    from pick p
    join {schema}.queue oq on oq.name = p.origin_queue
    left join {schema}.job orig on orig.id = p.origin_id
    where j.id = p.id
    returning j.id, j.queue, j.attempt, p.from_state, p.from_queue, oq.events
),
woke as (
    select pg_notify(%(channel)s, m.queue)
    from (select distinct queue from moved) m
),
logged as (
    insert into {schema}.job_event
        (job_id, queue, at, kind, from_state, to_state, attempt, data)
    select m.id, m.queue, coalesce(%(now)s, now()), 'redriven', m.from_state, 'queued',
           m.attempt, jsonb_build_object('from_queue', m.from_queue)
    from moved m
    where m.events
)
select (select count(*) from moved) as moved,
       (select count(*) from woke) as notified;
