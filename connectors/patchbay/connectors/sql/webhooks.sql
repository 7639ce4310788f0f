-- Webhook delivery: endpoints, messages, deliveries and attempts (migration 0008).
-- Every time-dependent statement takes coalesce(%(now)s, now()) (a FrozenClock in tests).

-- name: _webhook_endpoint_accepts
-- Whether endpoint e's event filter takes message m's event type: no filter, an exact type,
-- or a 'prefix.*' pattern.
(e.event_types is null
 or m.event_type = any (e.event_types)
 or exists (select 1 from unnest(e.event_types) as p (pattern)
            where right(p.pattern, 2) = '.*'
              and starts_with(m.event_type, left(p.pattern, -1))))

-- name: webhook_endpoint_insert
insert into {schema}.webhook_endpoint
    (id, tenant, url, description, event_types, secret_ref, created_at, updated_at)
values (%(id)s, %(tenant)s, %(url)s, %(description)s, %(event_types)s::text[], %(secret_ref)s,
        coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now()))
returning *;

-- name: webhook_endpoint_get
select * from {schema}.webhook_endpoint where id = %(id)s;

-- name: webhook_endpoint_get_for_update
select * from {schema}.webhook_endpoint where id = %(id)s for update;

-- name: webhook_endpoint_list
select * from {schema}.webhook_endpoint
where (%(tenant)s::text is null or tenant = %(tenant)s)
  and (%(enabled)s::boolean is null or enabled = %(enabled)s)
order by tenant, created_at, id
limit %(limit)s;

-- name: webhook_endpoint_update
update {schema}.webhook_endpoint
set url = coalesce(%(url)s, url),
    description = coalesce(%(description)s, description),
    event_types = case when %(set_event_types)s then %(event_types)s::text[] else event_types end,
    updated_at = coalesce(%(now)s::timestamptz, now())
where id = %(id)s
returning *;

-- name: webhook_endpoint_disable
-- Disables an enabled endpoint and cancels its pending deliveries (their jobs find them
-- cancelled and finish without sending). Returns the endpoint's row when it was enabled.
with changed as (
    update {schema}.webhook_endpoint
    set enabled = false,
        disabled_reason = %(reason)s,
        disabled_at = coalesce(%(now)s::timestamptz, now()),
        updated_at = coalesce(%(now)s::timestamptz, now())
    where id = %(id)s and enabled
    returning *
), cancelled as (
    update {schema}.webhook_delivery d
    set state = 'cancelled',
        last_error = 'endpoint disabled: ' || %(reason)s,
        next_attempt_at = null,
        updated_at = coalesce(%(now)s::timestamptz, now())
    from changed c
    where d.endpoint_id = c.id and d.state = 'pending'
)
select * from changed;

-- name: webhook_endpoint_enable
-- A re-enabled endpoint starts a new failure count.
update {schema}.webhook_endpoint
set enabled = true,
    disabled_reason = null,
    disabled_at = null,
    failing_since = null,
    updated_at = coalesce(%(now)s::timestamptz, now())
where id = %(id)s
returning *;

-- name: webhook_endpoint_rotate_secret
-- The current secret becomes the previous one for the grace period; returns the new row
-- and the reference of the previous secret it replaces (to be deleted from the vault).
update {schema}.webhook_endpoint e
set secret_ref = %(secret_ref)s,
    previous_secret_ref = o.secret_ref,
    previous_secret_expires_at
        = coalesce(%(now)s::timestamptz, now()) + %(grace_s)s * interval '1 second',
    updated_at = coalesce(%(now)s::timestamptz, now())
from (select id, secret_ref, previous_secret_ref
      from {schema}.webhook_endpoint
      where id = %(id)s
      for update) o
where e.id = o.id
returning e.*, o.previous_secret_ref as replaced_secret_ref;

-- name: webhook_endpoint_delete
delete from {schema}.webhook_endpoint where id = %(id)s
returning tenant, secret_ref;

-- name: webhook_message_insert_with_deliveries
-- send_event in one statement: the message (nothing if its id exists) and one delivery per
-- enabled endpoint of its tenant whose filter takes it.
with m as (
    insert into {schema}.webhook_message (id, tenant, event_type, body, created_at)
    values (%(id)s, %(tenant)s, %(event_type)s, %(body)s, %(created_at)s)
    on conflict (id) do nothing
    returning id, tenant, event_type
), inserted as (
    insert into {schema}.webhook_delivery
        (id, message_id, endpoint_id, replay, created_at, updated_at)
    select gen_random_uuid(), m.id, e.id, false, %(created_at)s, %(created_at)s
    from m
    join {schema}.webhook_endpoint e
      on e.tenant = m.tenant and e.enabled and {_webhook_endpoint_accepts}
    returning id
)
select exists (select 1 from m) as created,
       (select coalesce(array_agg(id), array[]::uuid[]) from inserted) as ids;

-- name: webhook_message_delete_before
-- Retention: one batch of the messages created before a time, with their deliveries and
-- attempts (cascade). A pending delivery's job then finds nothing and finishes.
delete from {schema}.webhook_message
where id in (select id from {schema}.webhook_message
             where created_at < %(before)s
             order by created_at
             limit %(limit)s);

-- name: webhook_message_get
select * from {schema}.webhook_message where id = %(id)s;

-- name: webhook_message_list
select * from {schema}.webhook_message
where (%(tenant)s::text is null or tenant = %(tenant)s)
  and (%(event_type)s::text is null or event_type = %(event_type)s)
  and (%(since)s::timestamptz is null or created_at >= %(since)s)
  and (%(until)s::timestamptz is null or created_at < %(until)s)
order by created_at desc, id desc
limit %(limit)s;

-- name: webhook_delivery_insert_for_message
-- One delivery per enabled endpoint of the message's tenant whose filter takes it (or
-- only endpoint_id's, when given).
insert into {schema}.webhook_delivery
    (id, message_id, endpoint_id, replay, created_at, updated_at)
select gen_random_uuid(), m.id, e.id, %(replay)s,
       coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now())
from {schema}.webhook_message m
join {schema}.webhook_endpoint e
  on e.tenant = m.tenant and e.enabled
 and (%(endpoint_id)s::uuid is null or e.id = %(endpoint_id)s::uuid)
 and {_webhook_endpoint_accepts}
where m.id = %(message_id)s
order by e.created_at, e.id
returning id;

-- name: webhook_delivery_insert_replay_range
-- One batch of a replay by time range: the next `limit` messages of the tenant after the
-- keyset position, each to every enabled endpoint whose filter takes it (or only
-- endpoint_id's); with failed_only, only to endpoints that have no succeeded or pending
-- delivery of it. Returns the new deliveries and where the batch ended.
with m as (
    select id, tenant, event_type, created_at
    from {schema}.webhook_message
    where tenant = %(tenant)s
      and created_at >= %(since)s
      and (%(until)s::timestamptz is null or created_at < %(until)s)
      and (%(after_created_at)s::timestamptz is null
           or (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
    order by created_at, id
    limit %(limit)s
), inserted as (
    insert into {schema}.webhook_delivery
        (id, message_id, endpoint_id, replay, created_at, updated_at)
    select gen_random_uuid(), m.id, e.id, true,
           coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now())
    from m
    join {schema}.webhook_endpoint e
      on e.tenant = m.tenant and e.enabled
     and (%(endpoint_id)s::uuid is null or e.id = %(endpoint_id)s::uuid)
     and {_webhook_endpoint_accepts}
    where not %(failed_only)s
       or not exists (select 1 from {schema}.webhook_delivery d
                      where d.message_id = m.id and d.endpoint_id = e.id
                        and d.state in ('succeeded', 'pending'))
    returning id
), last as (
    select created_at, id from m order by created_at desc, id desc limit 1
)
select (select coalesce(array_agg(id), array[]::uuid[]) from inserted) as ids,
       (select count(*) from m) as scanned,
       (select created_at from last) as last_created_at,
       (select id from last) as last_id;

-- name: webhook_delivery_load
-- What the delivery handler needs, in one read; previous_secret_ref only while its grace
-- period lasts.
select d.id, d.state, d.attempts, d.next_attempt_at, d.message_id, d.endpoint_id,
       m.tenant, m.event_type, m.body,
       e.url, e.enabled, e.secret_ref,
       case when e.previous_secret_expires_at > coalesce(%(now)s::timestamptz, now())
            then e.previous_secret_ref end as previous_secret_ref,
       coalesce(%(now)s::timestamptz, now()) as now
from {schema}.webhook_delivery d
join {schema}.webhook_message m on m.id = d.message_id
join {schema}.webhook_endpoint e on e.id = d.endpoint_id
where d.id = %(id)s;

-- name: webhook_delivery_cancel
update {schema}.webhook_delivery
set state = 'cancelled',
    last_error = %(reason)s,
    next_attempt_at = null,
    updated_at = coalesce(%(now)s::timestamptz, now())
where id = %(id)s and state = 'pending'
returning id;

-- name: webhook_delivery_record_attempt
-- One attempt's outcome, in one statement: the attempt row, the delivery's new state and
-- schedule, and the endpoint's failure streak. A failure that is a 410 Gone, or that ends
-- a streak longer than disable_after, disables the endpoint and cancels its other pending
-- deliveries. The endpoint row is written only when its streak changes (a success on a
-- healthy endpoint leaves it alone). Returns whether this call disabled the endpoint.
with p as (
    select coalesce(%(now)s::timestamptz, now()) as now
), attempt as (
    insert into {schema}.webhook_attempt
        (delivery_id, message_id, endpoint_id, attempt, attempted_at, url, outcome, status,
         duration_ms, response_headers, response_body, body_truncated, error, next_attempt_at)
    select %(delivery_id)s, %(message_id)s, %(endpoint_id)s, %(attempt)s, p.now, %(url)s,
           %(outcome)s, %(status)s, %(duration_ms)s, %(response_headers)s::jsonb,
           %(response_body)s, %(body_truncated)s, %(error)s,
           p.now + %(delay_s)s::float8 * interval '1 second'
    from p
), delivery as (
    update {schema}.webhook_delivery
    set state = %(state)s,
        attempts = %(attempt)s,
        next_attempt_at = (select p.now from p) + %(delay_s)s::float8 * interval '1 second',
        last_status = %(status)s,
        last_error = %(error)s,
        updated_at = (select p.now from p)
    where id = %(delivery_id)s and state = 'pending'
), old as (
    select id, enabled, failing_since
    from {schema}.webhook_endpoint
    where id = %(endpoint_id)s and (%(failed)s or failing_since is not null)
    for update
), endpoint as (
    update {schema}.webhook_endpoint e
    set failing_since = case when %(failed)s then coalesce(o.failing_since, p.now) end,
        enabled = o.enabled and not x.disable,
        disabled_reason = case when o.enabled and x.disable then x.reason
                               else e.disabled_reason end,
        disabled_at = case when o.enabled and x.disable then p.now else e.disabled_at end,
        updated_at = p.now
    from old o
    cross join p
    cross join lateral (
        select %(gone)s
               or (%(failed)s and coalesce(o.failing_since, p.now)
                                  <= p.now - %(disable_after_s)s * interval '1 second')
                   as disable,
               case when %(gone)s then %(gone_reason)s
                    else 'every delivery attempt failed since '
                         || to_char(o.failing_since at time zone 'UTC',
                                    'YYYY-MM-DD HH24:MI:SS')
                         || ' UTC'
               end as reason
    ) x
    where e.id = o.id
    returning e.id, o.enabled and not e.enabled as disabled_now, e.disabled_reason
), cancelled as (
    update {schema}.webhook_delivery d
    set state = 'cancelled',
        last_error = 'endpoint disabled: ' || n.disabled_reason,
        next_attempt_at = null,
        updated_at = (select p.now from p)
    from endpoint n
    where n.disabled_now and d.endpoint_id = n.id and d.state = 'pending'
      and d.id <> %(delivery_id)s
)
select coalesce((select disabled_now from endpoint), false) as disabled_now,
       (select disabled_reason from endpoint) as disabled_reason;

-- name: webhook_delivery_get
select * from {schema}.webhook_delivery where id = %(id)s;

-- name: webhook_delivery_list_message
select * from {schema}.webhook_delivery
where message_id = %(message_id)s
order by created_at, id;

-- name: webhook_attempt_list_message
select * from {schema}.webhook_attempt
where message_id = %(message_id)s
order by id
limit %(limit)s;
