-- name: integration_record_success
-- A successful run: counters reset; an open warning (not an attention incident, which
-- needs a person) resolves by itself. Appends the 'synced' event, and 'resolved' after it
-- when a warning resolved.
with upd as (
    update {schema}.integration
    set last_success_at = coalesce(%(now)s, now()),
        consecutive_failures = 0,
        updated_at = coalesce(%(now)s, now())
    where id = %(integration)s
    returning id, tenant_id
),
resolved as (
    update {schema}.incident
    set status = 'resolved', resolved_at = coalesce(%(now)s, now()), resolved_by = 'success'
    where integration_id = %(integration)s and scope = 'integration' and status = 'open'
      and level = 'warning'
    returning id, level
),
event as (
    insert into {schema}.integration_event (integration_id, tenant_id, at, kind, data)
    select upd.id, upd.tenant_id, coalesce(%(now)s, now()), e.kind, e.data
    from upd
    cross join lateral (
        select 1 as n, 'synced' as kind, %(data)s::jsonb as data
        union all
        select 2, 'resolved',
               jsonb_build_object('incident', r.id, 'level', r.level, 'by', 'success')
        from resolved r
    ) e
    order by e.n
)
select (select id from resolved) as resolved_incident;

-- name: integration_record_failure
-- A final failure: counts it, keeps the (redacted) error, and returns what the policy
-- needs to decide.
update {schema}.integration
set consecutive_failures = consecutive_failures + 1,
    last_failure_at = coalesce(%(now)s, now()),
    last_error = %(error)s::jsonb,
    updated_at = coalesce(%(now)s, now())
where id = %(integration)s
returning tenant_id, connector, status, consecutive_failures, failure_policy;

-- name: integration_set_status
with upd as (
    update {schema}.integration
    set status = %(status)s, updated_at = coalesce(%(now)s, now()),
        consecutive_failures = case when %(reset)s then 0 else consecutive_failures end
    where id = %(integration)s and status = any(%(from)s::text[])
    returning id, tenant_id, status
),
event as (
    insert into {schema}.integration_event (integration_id, tenant_id, at, kind, data)
    select id, tenant_id, coalesce(%(now)s, now()), %(kind)s, %(data)s::jsonb from upd
)
select id, tenant_id from upd;

-- name: incident_open_for_integration
-- Opens the integration's incident, or updates the open one of this episode (the partial
-- unique index makes "one open incident per integration" a database rule). Returns the
-- incident, whether it was just opened, and whether it was just escalated to attention.
insert into {schema}.incident
    (id, scope, level, tenant_id, integration_id, connector, subject, title, last_error,
     failing_job_id, failure_count, first_failure_at, last_failure_at, opened_at)
values
    (%(id)s, 'integration', %(level)s, %(tenant)s, %(integration)s, %(connector)s,
     %(signature)s, %(title)s, %(error)s::jsonb, %(job)s, 1, coalesce(%(now)s, now()),
     coalesce(%(now)s, now()), coalesce(%(now)s, now()))
on conflict (integration_id) where status = 'open' and scope = 'integration'
do update set
    failure_count = {schema}.incident.failure_count + 1,
    last_error = excluded.last_error,
    failing_job_id = excluded.failing_job_id,
    last_failure_at = excluded.last_failure_at,
    subject = excluded.subject,
    title = case when excluded.level = 'attention' then excluded.title
                 else {schema}.incident.title end,
    escalated_at = case when {schema}.incident.level = 'warning'
                             and excluded.level = 'attention'
                        then excluded.last_failure_at
                        else {schema}.incident.escalated_at end,
    level = case when excluded.level = 'attention' then 'attention'
                 else {schema}.incident.level end
returning id, (xmax = 0) as opened,
          (level = 'attention' and escalated_at = last_failure_at) as escalated,
          level, parent_id;

-- name: incident_similar_open
-- Open attention incidents of other tenants' integrations of one connector failing the
-- same way recently: the evidence of a provider-level problem.
select id, tenant_id, parent_id
from {schema}.incident
where scope = 'integration' and status = 'open' and level = 'attention'
  and connector = %(connector)s and subject = %(signature)s
  and last_failure_at >= coalesce(%(now)s, now()) - %(window_s)s * interval '1 second';

-- name: incident_open_provider
insert into {schema}.incident (id, scope, level, connector, subject, title, last_error,
                               failure_count, first_failure_at, last_failure_at, opened_at)
values (%(id)s, 'provider', 'attention', %(connector)s, %(subject)s, %(title)s,
        %(error)s::jsonb, %(count)s, coalesce(%(now)s, now()), coalesce(%(now)s, now()),
        coalesce(%(now)s, now()))
on conflict (scope, subject) where status = 'open' and scope <> 'integration'
do update set failure_count = excluded.failure_count,
              last_failure_at = excluded.last_failure_at,
              last_error = excluded.last_error
returning id, (xmax = 0) as opened;

-- name: incident_link_children
update {schema}.incident set parent_id = %(parent)s
where id = any(%(ids)s::uuid[]) and parent_id is null;

-- name: incident_open_subject
-- An incident about something else than an integration (a disabled webhook endpoint, an
-- alert): one open per subject.
insert into {schema}.incident (id, scope, level, tenant_id, connector, subject, title,
                               last_error, failure_count, first_failure_at,
                               last_failure_at, opened_at)
values (%(id)s, %(scope)s, 'attention', %(tenant)s, %(connector)s, %(subject)s, %(title)s,
        %(error)s::jsonb, 1, coalesce(%(now)s, now()), coalesce(%(now)s, now()),
        coalesce(%(now)s, now()))
on conflict (scope, subject) where status = 'open' and scope <> 'integration'
do update set failure_count = {schema}.incident.failure_count + 1,
              last_failure_at = excluded.last_failure_at,
              last_error = excluded.last_error
returning id, (xmax = 0) as opened;

-- name: incident_resolve_for_integration
update {schema}.incident
set status = 'resolved', resolved_at = coalesce(%(now)s, now()), resolved_by = %(by)s
where integration_id = %(integration)s and scope = 'integration' and status = 'open'
returning id, parent_id;

-- name: incident_resolve
update {schema}.incident
set status = 'resolved', resolved_at = coalesce(%(now)s, now()), resolved_by = %(by)s
where id = %(id)s and status = 'open'
returning id, scope, integration_id, parent_id;

-- name: incident_resolve_parent_if_done
-- A provider incident resolves when none of its children is open any more.
update {schema}.incident p
set status = 'resolved', resolved_at = coalesce(%(now)s, now()), resolved_by = 'children'
where p.id = %(parent)s and p.status = 'open'
  and not exists (select 1 from {schema}.incident c
                  where c.parent_id = p.id and c.status = 'open')
returning id;

-- name: incident_get
select * from {schema}.incident where id = %(id)s;

-- name: incident_list
select * from {schema}.incident
where (%(status)s::text is null or status = %(status)s::text)
  and (%(tenant)s::text is null or tenant_id = %(tenant)s::text)
  and (%(integration)s::text is null or integration_id = %(integration)s::text)
order by opened_at desc, id
limit %(limit)s;

-- name: integration_event_insert
insert into {schema}.integration_event (integration_id, tenant_id, at, kind, data)
values (%(integration)s, %(tenant)s, coalesce(%(now)s, now()), %(kind)s, %(data)s::jsonb);

-- name: integration_event_insert_for
-- An event of an integration, its tenant read from the integration (none if it is gone).
insert into {schema}.integration_event (integration_id, tenant_id, at, kind, data)
select id, tenant_id, coalesce(%(now)s, now()), %(kind)s, %(data)s::jsonb
from {schema}.integration
where id = %(integration)s;
