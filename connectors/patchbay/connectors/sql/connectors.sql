-- name: connector_state_get
select state, state_version from {schema}.connector_state
where integration_id = %(integration)s and job_type = %(job_type)s;

-- name: connector_state_put
insert into {schema}.connector_state (integration_id, job_type, state, state_version, updated_at)
values (%(integration)s, %(job_type)s, %(state)s::jsonb, %(state_version)s, now())
on conflict (integration_id, job_type) do update
set state = excluded.state, state_version = excluded.state_version, updated_at = now();

-- name: connector_record_upsert_many
-- Idempotent: an unchanged record is not rewritten (no new row version, no updated_at bump).
-- The two arrays are passed in binary format: as text array literals, quoting ~100 KB of
-- JSON per page made the statement about 4x slower (bench sync_records).
insert into {schema}.connector_record (integration_id, stream, external_id, data)
select %(integration)s, %(stream)s, r.external_id, r.data::jsonb
from unnest(%(ids)b::text[], %(data)b::text[]) as r(external_id, data)
on conflict (integration_id, stream, external_id) do update
set data = excluded.data, updated_at = now()
where {schema}.connector_record.data is distinct from excluded.data;

-- name: connector_record_count
select stream, count(*) from {schema}.connector_record
where integration_id = %(integration)s
group by stream order by stream;

-- name: connector_backfill_insert
insert into {schema}.connector_backfill
    (id, tenant, integration_id, connector, job_type, range_start, range_end, window_s,
     windows_total)
values (%(id)s, %(tenant)s, %(integration)s, %(connector)s, %(job_type)s, %(range_start)s,
        %(range_end)s, %(window_s)s, %(windows_total)s);

-- name: connector_backfill_window_insert_many
insert into {schema}.connector_backfill_window
    (backfill_id, window_index, window_start, window_end, job_id)
select %(id)s, w.i, w.s, w.e, w.job
from unnest(%(indexes)s::int[], %(starts)s::timestamptz[], %(ends)s::timestamptz[],
            %(jobs)s::uuid[]) as w(i, s, e, job);

-- name: connector_backfill_window_done
-- Marks one window done (once) and completes the backfill with its last window.
with win as (
    update {schema}.connector_backfill_window
    set done_at = now()
    where backfill_id = %(id)s and window_index = %(index)s and done_at is null
    returning backfill_id
)
update {schema}.connector_backfill b
set windows_done = b.windows_done + 1,
    status = case when b.windows_done + 1 >= b.windows_total then 'completed' else b.status end,
    completed_at = case when b.windows_done + 1 >= b.windows_total then now() end
from win
where b.id = win.backfill_id
returning b.status;

-- name: connector_backfill_get
select id, tenant, integration_id, connector, job_type, range_start, range_end, window_s,
       windows_total, windows_done, status, created_at, completed_at
from {schema}.connector_backfill where id = %(id)s;

-- name: connector_backfill_pending_windows
select window_index, window_start, window_end
from {schema}.connector_backfill_window
where backfill_id = %(id)s and done_at is null
order by window_index;

-- name: connector_backfill_window_set_job
update {schema}.connector_backfill_window
set job_id = t.job
from unnest(%(indexes)s::int[], %(jobs)s::uuid[]) as t(i, job)
where backfill_id = %(id)s and window_index = t.i;
