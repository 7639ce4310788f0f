-- Audit export: how far each named exporter of the audit stream has delivered.
-- event_id / job_event_id: every integration_event / job_event with an id up to this one
-- that will ever be visible has been delivered (ids are handed out at insert, not at
-- commit, so the exporter moves these past a gap only once no transaction can fill it).
-- An exporter holds its row's lock while it delivers: one daemon at a time per name.
create table audit_export_cursor (
    name          text primary key,
    event_id      bigint not null default 0 check (event_id >= 0),
    job_event_id  bigint not null default 0 check (job_event_id >= 0),
    delivered     bigint not null default 0 check (delivered >= 0),
    updated_at    timestamptz not null default now()
);

-- Every fan-out updates its integrations' last_scheduled_at, and every sync their success
-- or failure counters: room left on each page lets those updates stay on the page (HOT),
-- without new index entries. Applies to pages written from now on.
alter table integration set (fillfactor = 80);
