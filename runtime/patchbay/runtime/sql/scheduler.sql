-- name: scheduler_now
select coalesce(%(now)s, now());

-- name: integration_scheduling_candidates
-- The tenant's active integrations with what the due check needs. Rows another fan-out of
-- this tenant holds are skipped (that one schedules them).
select i.id, i.connector, i.config, i.schedule, i.last_scheduled_at,
       t.sync_schedule, t.starts_per_interval, t.start_interval_s, t.max_concurrent,
       t.fairness_weight
from {schema}.integration i
join {schema}.tenant t on t.id = i.tenant_id
where i.tenant_id = %(tenant)s and i.status = 'active' and t.status = 'active'
order by i.id
for update of i skip locked;

-- name: integration_mark_scheduled
update {schema}.integration
set last_scheduled_at = %(at)s
where id = any(%(ids)s::text[]);

-- name: tenant_get_limits
select id, status, starts_per_interval, start_interval_s, sync_schedule
from {schema}.tenant where id = %(tenant)s;

-- name: tenant_list_for_schedules
select id, status, sync_schedule from {schema}.tenant order by id;

-- name: tenant_queue_limits_apply
-- The tenant's fairness weight and concurrency limit on one sync queue, in one round trip.
with weight as (
    insert into {schema}.fairness_weight (queue, fairness_key, weight)
    select %(queue)s, %(tenant)s, %(weight)s
    on conflict (queue, fairness_key) do update set weight = excluded.weight
),
concurrency as (
    insert into {schema}.job_group_limit (queue, group_key, max_active)
    select %(queue)s, %(tenant)s, %(max_active)s where %(max_active)s::int is not null
    on conflict (queue, group_key) do update set max_active = excluded.max_active
)
select 1;
