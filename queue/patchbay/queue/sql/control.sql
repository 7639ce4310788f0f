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
