-- name: integration_event_list_timeline
-- One integration's lifecycle events at or after %(since)s (null: from the start), in time
-- order.
select id, integration_id, tenant_id, at, kind, data
from {schema}.integration_event
where integration_id = %(integration)s
  and at >= coalesce(%(since)s::timestamptz, '-infinity'::timestamptz)
order by at, id
limit %(limit)s;

-- name: job_event_list_timeline
-- Job events of one integration's jobs (any queue of its connector, dead-letter copies
-- included when their queue is), at or after %(since)s, in time order. The job's payload
-- names its integration; events go when retention deletes their job.
select e.id, e.job_id, e.queue, e.at, e.kind, e.from_state::text as from_state,
       e.to_state::text as to_state, e.attempt, e.data,
       i.id as integration_id, i.tenant_id
from {schema}.integration i
join {schema}.queue q on left(q.name, length(i.connector) + 1) = i.connector || '.'
join {schema}.job_event e on e.queue = q.name
join {schema}.job j on j.id = e.job_id
where i.id = %(integration)s
  and e.at >= coalesce(%(since)s::timestamptz, '-infinity'::timestamptz)
  and j.data ->> 'integration' = i.id
order by e.at, e.id
limit %(limit)s;

-- name: integration_event_list_export
-- Events after an exporter's position, in id order, with the bounds of the snapshot that
-- read them (xmin: the oldest transaction still running; xmax: the first not yet started),
-- which tell the exporter when a gap in the ids can no longer be filled. One row with
-- null event columns when there is nothing after the position.
select s.xmin, s.xmax, e.id, e.integration_id, e.tenant_id, e.at, e.kind, e.data
from (select pg_snapshot_xmin(pg_current_snapshot())::text::bigint as xmin,
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xmax) s
left join lateral (
    select id, integration_id, tenant_id, at, kind, data
    from {schema}.integration_event
    where id > %(after)s
    order by id
    limit %(limit)s
) e on true
order by e.id;

-- name: job_event_list_export
-- As integration_event_list_export, for job events; integration_id is null for a job that
-- belongs to no integration (or was deleted since): the exporter passes over those.
select s.xmin, s.xmax, e.id, e.job_id, e.queue, e.at, e.kind,
       e.from_state::text as from_state, e.to_state::text as to_state, e.attempt, e.data,
       j.data ->> 'integration' as integration_id, j.data ->> 'tenant' as tenant_id
from (select pg_snapshot_xmin(pg_current_snapshot())::text::bigint as xmin,
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xmax) s
left join lateral (
    select id, job_id, queue, at, kind, from_state, to_state, attempt, data
    from {schema}.job_event
    where id > %(after)s
    order by id
    limit %(limit)s
) e on true
left join {schema}.job j on j.id = e.job_id
order by e.id;

-- name: audit_export_cursor_create
-- A new exporter starts at the beginning of the stream, or (from_end) after what exists.
insert into {schema}.audit_export_cursor (name, event_id, job_event_id)
select %(name)s,
       case when %(from_end)s then (select coalesce(max(id), 0) from {schema}.integration_event)
            else 0 end,
       case when %(from_end)s then (select coalesce(max(id), 0) from {schema}.job_event)
            else 0 end
on conflict (name) do nothing;

-- name: audit_export_cursor_lock
-- The exporter's position, locked for one round; no row while another daemon holds it.
select event_id, job_event_id
from {schema}.audit_export_cursor
where name = %(name)s
for update skip locked;

-- name: audit_export_cursor_advance
update {schema}.audit_export_cursor
set event_id = %(event_id)s,
    job_event_id = %(job_event_id)s,
    delivered = delivered + %(delivered)s,
    updated_at = now()
where name = %(name)s;

-- name: audit_export_cursor_get
select name, event_id, job_event_id, delivered, updated_at
from {schema}.audit_export_cursor
where name = %(name)s;
