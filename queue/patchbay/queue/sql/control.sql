-- name: group_limit_set
insert into {schema}.job_group_limit (queue, group_key, max_active)
values (%(queue)s, %(group_key)s, %(max_active)s)
on conflict (queue, group_key) do update set max_active = excluded.max_active;

-- name: group_limit_delete
delete from {schema}.job_group_limit where queue = %(queue)s and group_key = %(group_key)s;

-- name: group_active_count
select count(*) from {schema}.job_group_slot
where queue = %(queue)s and group_key = %(group_key)s;

-- name: fairness_weight_set
insert into {schema}.fairness_weight (queue, fairness_key, weight)
values (%(queue)s, %(fairness_key)s, %(weight)s)
on conflict (queue, fairness_key) do update set weight = excluded.weight;

-- name: fairness_weight_delete
delete from {schema}.fairness_weight
where queue = %(queue)s and fairness_key = %(fairness_key)s;

-- name: rate_limit_set
-- A new bucket starts full; a changed one keeps its tokens, capped at the new capacity.
insert into {schema}.rate_limit (key, capacity, interval_s, tokens, updated_at)
values (%(key)s, %(capacity)s, %(interval_s)s, %(capacity)s, coalesce(%(now)s, now()))
on conflict (key) do update
set capacity = excluded.capacity,
    interval_s = excluded.interval_s,
    tokens = least({schema}.rate_limit.tokens, excluded.capacity);

-- name: rate_limit_delete
delete from {schema}.rate_limit where key = %(key)s returning key;

-- name: rate_limit_list
select key, capacity, interval_s,
       least(capacity::double precision,
             tokens + greatest(0, extract(epoch from coalesce(%(now)s, now()) - updated_at))
                      * capacity / interval_s) as available
from {schema}.rate_limit
order by key;

-- name: job_explain
-- The facts that say why a job is not running: its state and start time, its group's
-- load, its rate limit's tokens, and how many runnable jobs are ahead of it (jobs held by
-- their own group or rate limit do not count: they do not block it).
select j.id, j.queue, j.state::text as state, j.start_after,
       coalesce(%(now)s, now()) as now,
       j.group_key,
       case when j.group_key is not null then
           (select count(*) from {schema}.job_group_slot s
            where s.queue = j.queue and s.group_key = j.group_key) end as group_active,
       case when j.group_key is not null then
           {schema}.job_group_limit_of(j.queue, j.group_key) end as group_limit,
       j.rate_key,
       r.capacity as rate_capacity,
       r.interval_s as rate_interval_s,
       case when r.key is not null then
           least(r.capacity::double precision,
                 r.tokens + greatest(0, extract(epoch from coalesce(%(now)s, now())
                                                - r.updated_at))
                            * r.capacity / r.interval_s) end as rate_available,
       q.fair,
       j.fairness_key,
       (select count(*) from {schema}.job a
        where a.queue = j.queue and a.state in ('queued', 'retrying')
          and a.start_after <= coalesce(%(now)s, now())
          and (a.priority, j.start_after, j.id) > (j.priority, a.start_after, a.id)
          and (a.group_key is null or {schema}.job_group_has_room(a.queue, a.group_key))
          and (a.rate_key is null or {schema}.rate_limit_has_tokens(a.rate_key, %(now)s))
       ) as ahead,
       case when q.fair then
           (select count(*) from {schema}.job a
            where a.queue = j.queue and a.state in ('queued', 'retrying')
              and a.fairness_key = j.fairness_key
              and a.start_after <= coalesce(%(now)s, now())
              and (a.priority, j.start_after, j.id) > (j.priority, a.start_after, a.id)
              and (a.group_key is null or {schema}.job_group_has_room(a.queue, a.group_key))
              and (a.rate_key is null or {schema}.rate_limit_has_tokens(a.rate_key, %(now)s)))
       end as ahead_in_key
from {schema}.job j
left join {schema}.queue q on q.name = j.queue
left join {schema}.rate_limit r on r.key = j.rate_key
where j.id = %(id)s;
