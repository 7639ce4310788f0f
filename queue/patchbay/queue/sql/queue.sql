-- name: queue_insert
insert into {schema}.queue
    (name, retry_limit, retry_delay_s, retry_backoff, retry_delay_max_s, expire_in_s,
     retention_s, dead_letter, group_limit, fair, max_queued_age_s, events, policy)
values
    (%(name)s, %(retry_limit)s, %(retry_delay_s)s, %(retry_backoff)s, %(retry_delay_max_s)s,
     %(expire_in_s)s, %(retention_s)s, %(dead_letter)s, %(group_limit)s, %(fair)s,
     %(max_queued_age_s)s, %(events)s, %(policy)s)
on conflict (name) do nothing
returning name;

-- name: queue_update
-- A queue turned fair gives its waiting jobs the empty fairness key, so fair fetch sees them.
with keyed as (
    update {schema}.job
    set fairness_key = ''
    where %(fair)s and queue = %(name)s and fairness_key is null
      and state in ('queued', 'retrying')
)
update {schema}.queue
set retry_limit = %(retry_limit)s,
    retry_delay_s = %(retry_delay_s)s,
    retry_backoff = %(retry_backoff)s,
    retry_delay_max_s = %(retry_delay_max_s)s,
    expire_in_s = %(expire_in_s)s,
    retention_s = %(retention_s)s,
    dead_letter = %(dead_letter)s,
    group_limit = %(group_limit)s,
    fair = %(fair)s,
    max_queued_age_s = %(max_queued_age_s)s,
    events = %(events)s,
    policy = %(policy)s,
    updated_at = now()
where name = %(name)s
returning name;

-- name: queue_dead_letter_lock
-- Serialises changes of dead-letter settings (transaction-scoped), so two concurrent
-- changes cannot each miss the other's half of a cycle.
select pg_advisory_xact_lock(hashtext(%(lock)s));

-- name: queue_dead_letter_cycle
-- Whether making %(dead_letter)s the dead-letter queue of %(name)s closes a loop: follows
-- the chain from %(dead_letter)s (bounded, in case one already exists) looking for %(name)s.
with recursive chain(name, depth) as (
    select %(dead_letter)s::text, 1
    union all
    select q.dead_letter, c.depth + 1
    from chain c
    join {schema}.queue q on q.name = c.name
    where q.dead_letter is not null and c.depth < 1000
)
select exists (select 1 from chain where name = %(name)s) as cycle;

-- name: queue_get
select *
from {schema}.queue
where name = %(name)s;

-- name: queue_list
select *
from {schema}.queue
order by name;

-- name: queue_delete
-- The queue's jobs go with it, and their events.
with gone as (delete from {schema}.job where queue = %(name)s returning id),
events_gone as (delete from {schema}.job_event e using gone where e.job_id = gone.id)
delete from {schema}.queue where name = %(name)s returning name;

-- name: queue_stats
-- One pass over the (queue, state) index; deferred = queued but not yet due.
select q.name,
       count(j.id) filter (where j.state = 'queued'
                             and j.start_after <= coalesce(%(now)s, now())) as queued,
       count(j.id) filter (where j.state = 'queued'
                             and j.start_after > coalesce(%(now)s, now())) as deferred,
       count(j.id) filter (where j.state = 'retrying') as retrying,
       count(j.id) filter (where j.state = 'active') as active,
       count(j.id) filter (where j.state = 'completed') as completed,
       count(j.id) filter (where j.state = 'failed') as failed,
       count(j.id) filter (where j.state = 'cancelled') as cancelled,
       extract(epoch from coalesce(%(now)s, now()) - min(j.start_after) filter (
           where j.state in ('queued', 'retrying')
             and j.start_after <= coalesce(%(now)s, now())))::double precision
           as oldest_queued_age_s
from {schema}.queue q
left join {schema}.job j on j.queue = q.name
where %(name)s::text is null or q.name = %(name)s::text
group by q.name
order by q.name;
