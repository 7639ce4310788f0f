-- name: schedule_now
-- The clock fire times are computed against: the caller's (tests) or the database's.
select coalesce(%(now)s::timestamptz, now()) as now;

-- name: schedule_lock
-- Held by an edit until it commits, so a tick's claim of this row waits for it.
select cron, tz, next_fire_at, revision
from {schema}.schedule
where name = %(name)s
for update;

-- name: schedule_upsert
-- Every real change bumps revision (voiding claims computed from the old row); applying
-- the same definition again changes nothing and returns no row.
insert into {schema}.schedule as s
    (name, cron, tz, queue, data, options, catch_up, next_fire_at, revision, created_at,
     updated_at)
values
    (%(name)s, %(cron)s, %(tz)s, %(queue)s, %(data)s::jsonb, %(options)s::jsonb,
     %(catch_up)s, %(next_fire_at)s::timestamptz, 1, coalesce(%(now)s::timestamptz, now()),
     coalesce(%(now)s::timestamptz, now()))
on conflict (name) do update
set cron = excluded.cron,
    tz = excluded.tz,
    queue = excluded.queue,
    data = excluded.data,
    options = excluded.options,
    catch_up = excluded.catch_up,
    next_fire_at = excluded.next_fire_at,
    revision = s.revision + 1,
    updated_at = excluded.updated_at
where (s.cron, s.tz, s.queue, s.data, s.options, s.catch_up, s.next_fire_at)
      is distinct from (excluded.cron, excluded.tz, excluded.queue, excluded.data,
                        excluded.options, excluded.catch_up, excluded.next_fire_at)
returning name;

-- name: schedule_get
select name, cron, tz, queue, data, options, catch_up, next_fire_at, last_fire_at,
       last_job_id, revision, created_at, updated_at
from {schema}.schedule
where name = %(name)s;

-- name: schedule_list
select name, cron, tz, queue, data, options, catch_up, next_fire_at, last_fire_at,
       last_job_id, revision, created_at, updated_at
from {schema}.schedule
order by name;

-- name: schedule_delete
delete from {schema}.schedule where name = %(name)s returning name;

-- name: schedule_list_due
-- The schedules whose next fire has come, oldest first, with the tick's clock.
select coalesce(%(now)s::timestamptz, now()) as now, name, cron, tz, queue, data, options,
       catch_up, next_fire_at, revision
from {schema}.schedule
where next_fire_at <= coalesce(%(now)s::timestamptz, now())
order by next_fire_at, name
limit %(limit)s;

-- name: schedule_get_due
-- One schedule again after a lost claim: still due, and as it is now.
select coalesce(%(now)s::timestamptz, now()) as now, name, cron, tz, queue, data, options,
       catch_up, next_fire_at, revision
from {schema}.schedule
where name = %(name)s and next_fire_at <= coalesce(%(now)s::timestamptz, now());

-- name: schedule_claim_fire
-- Compare-and-set on (revision, next_fire_at): only the tick that read the current row
-- advances it. The fire row is what makes the fire exactly-once: a (schedule, fire_at)
-- already recorded is not recorded again (recorded = 0), and the caller then sends no
-- job. The caller inserts the job in the same transaction.
with claimed as (
    update {schema}.schedule s
    set next_fire_at = %(next_fire_at)s::timestamptz,
        last_fire_at = %(fire_at)s::timestamptz,
        last_job_id = %(job_id)s::uuid
    where s.name = %(name)s
      and s.revision = %(revision)s
      and s.next_fire_at = %(expected_next_fire_at)s::timestamptz
    returning s.name
),
fire as (
    insert into {schema}.schedule_fire (schedule, fire_at, covers_from, job_id, fired_at)
    select claimed.name, %(fire_at)s::timestamptz, %(covers_from)s::timestamptz,
           %(job_id)s::uuid, coalesce(%(now)s::timestamptz, now())
    from claimed
    on conflict (schedule, fire_at) do nothing
    returning job_id
)
select (select count(*) from claimed) as claimed, (select count(*) from fire) as recorded;

-- name: schedule_fire_list
-- A schedule's handled fires, newest first (job_id null: skipped as missed).
select schedule, fire_at, covers_from, job_id, fired_at
from {schema}.schedule_fire
where schedule = %(name)s
order by fire_at desc
limit %(limit)s;

-- name: schedule_fire_prune
-- Fire rows only guard against firing a time twice; past the retention no clock can
-- reach back to them.
delete from {schema}.schedule_fire
where (schedule, fire_at) in (
    select schedule, fire_at
    from {schema}.schedule_fire
    where fire_at < coalesce(%(now)s::timestamptz, now()) - %(retention_s)s * interval '1 second'
    limit %(limit)s
);
