-- name: integration_scheduling_candidates
-- The active integrations of the given active tenants, with what the due check needs and
-- the clock it is made against (the caller's, else the database's: one round trip for
-- both). Rows another fan-out holds are skipped (that one schedules them). The tenant
-- filter is on both sides so the plan starts from the few tenants even before the tenant
-- table has statistics.
select coalesce(%(now)s::timestamptz, now()) as now,
       i.tenant_id, i.id, i.connector, i.config, i.schedule, i.last_scheduled_at,
       t.sync_schedule, t.starts_per_interval, t.start_interval_s, t.max_concurrent,
       t.fairness_weight
from {schema}.integration i
join {schema}.tenant t on t.id = i.tenant_id
where i.tenant_id = any(%(tenants)s::text[]) and t.id = any(%(tenants)s::text[])
  and i.status = 'active' and t.status = 'active'
order by i.id
for update of i skip locked;

-- name: integration_mark_scheduled
update {schema}.integration
set last_scheduled_at = %(at)s
where id = any(%(ids)s::text[]);

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
