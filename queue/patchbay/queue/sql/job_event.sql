-- Job events: an append-only log of state changes. Failures and expiries append theirs in
-- the statements that make them (job_fail_many, job_expire_queued); the statements here
-- record the other transitions, and run only for queues whose `events` setting is on.

-- name: job_event_insert_transition
-- One kind of transition for a batch of jobs, written just after the statement that made
-- it. A job is recorded only if it is now in to_state at the given attempt, so a write
-- that lost a race (stale attempt, job cancelled meanwhile) records nothing.
insert into {schema}.job_event (job_id, queue, at, kind, from_state, to_state, attempt)
select j.id, j.queue, coalesce(%(now)s, now()), %(kind)s::text,
       %(from_state)s::text::{schema}.job_state, j.state, j.attempt
from unnest(%(ids)s::uuid[], %(attempts)s::int[]) as t(id, attempt)
join {schema}.job j on j.id = t.id and j.attempt = t.attempt
where j.state = %(to_state)s::text::{schema}.job_state;

-- name: job_event_insert_created
-- 'created' events of just-sent jobs, stamped with their creation time. A send that added
-- no job (a repeated id) records nothing new.
insert into {schema}.job_event (job_id, queue, at, kind, from_state, to_state, attempt)
select j.id, j.queue, j.created_at, 'created', null, 'queued', 0
from {schema}.job j
where j.id = any(%(ids)s::uuid[])
  and j.queue = %(queue)s
  and not exists (
      select 1 from {schema}.job_event e where e.job_id = j.id and e.kind = 'created');

-- name: job_event_list_job
-- One job's history, oldest first.
select id, job_id, queue, at, kind, from_state::text as from_state, to_state::text as to_state,
       attempt, data
from {schema}.job_event
where job_id = %(job_id)s
order by at, id
limit %(limit)s;

-- name: job_event_list_queue
-- A queue's events at or after %(since)s, oldest first.
select id, job_id, queue, at, kind, from_state::text as from_state, to_state::text as to_state,
       attempt, data
from {schema}.job_event
where queue = %(queue)s and at >= %(since)s
order by at, id
limit %(limit)s;

-- name: job_event_list_queue_latest
-- A queue's latest %(limit)s events, returned oldest first.
select *
from (
    select id, job_id, queue, at, kind, from_state::text as from_state,
           to_state::text as to_state, attempt, data
    from {schema}.job_event
    where queue = %(queue)s
    order by at desc, id desc
    limit %(limit)s
) latest
order by at, id;
