-- Named statements of the secret vault. {schema} is the only identifier substituted.

-- name: master_key_register
insert into {schema}.master_key (id, fingerprint)
values (%(id)s, %(fingerprint)s)
on conflict (id) do nothing;

-- name: master_key_list
select id, fingerprint, first_used_at
from {schema}.master_key
order by first_used_at, id;

-- name: master_key_fingerprint
select fingerprint from {schema}.master_key where id = %(id)s;

-- name: data_key_get_for_share
-- KEY SHARE: a concurrent shred waits for this transaction instead of deleting the key
-- under a put; rotation (which takes NO KEY UPDATE) is not blocked.
select master_key_id, wrapped_key
from {schema}.data_key
where tenant = %(tenant)s
for key share;

-- name: data_key_insert
insert into {schema}.data_key (tenant, master_key_id, wrapped_key)
values (%(tenant)s, %(master_key_id)s, %(wrapped_key)s)
on conflict (tenant) do nothing
returning tenant;

-- name: data_key_claim_for_rewrap
-- A batch of data keys not yet wrapped by the target key, after the cursor; rows another
-- rotation holds are skipped (it is re-wrapping them).
select tenant, master_key_id, wrapped_key
from {schema}.data_key
where master_key_id <> %(target)s and tenant > %(after)s
order by tenant
limit %(limit)s
for no key update skip locked;

-- name: data_key_rewrap
update {schema}.data_key
set master_key_id = %(target)s, wrapped_key = %(wrapped_key)s, rewrapped_at = now()
where tenant = %(tenant)s and master_key_id = %(old_key_id)s;

-- name: data_key_count_by_master_key
select master_key_id, count(*)::bigint
from {schema}.data_key
group by master_key_id
order by master_key_id;

-- name: data_key_count_not_wrapped_by
select count(*)::bigint from {schema}.data_key where master_key_id <> %(target)s;

-- name: data_key_lock_for_shred
-- Waits for puts in flight (they hold KEY SHARE) and keeps new ones out, so the counts
-- that data_key_shred reads next, in a fresh snapshot, are exactly what it deletes.
select tenant from {schema}.data_key where tenant = %(tenant)s for update;

-- name: data_key_shred
-- The cascade removes the tenant's secrets and versions with its key.
with secrets as (
    select count(*)::bigint as n from {schema}.secret where tenant = %(tenant)s
), versions as (
    select count(*)::bigint as n from {schema}.secret_version where tenant = %(tenant)s
), gone as (
    delete from {schema}.data_key where tenant = %(tenant)s returning tenant
)
select (select count(*) from gone)::bigint, (select n from secrets), (select n from versions);

-- name: secret_next_version
insert into {schema}.secret (tenant, name, last_version)
values (%(tenant)s, %(name)s, 1)
on conflict (tenant, name) do update
set last_version = {schema}.secret.last_version + 1, updated_at = now()
returning last_version;

-- name: secret_version_insert
insert into {schema}.secret_version (tenant, name, version, ciphertext)
values (%(tenant)s, %(name)s, %(version)s, %(ciphertext)s)
returning created_at;

-- name: secret_version_prune
-- Keeps the newest versions (as many as the keep parameter says).
delete from {schema}.secret_version
where tenant = %(tenant)s and name = %(name)s
  and version <= (
      select version from {schema}.secret_version
      where tenant = %(tenant)s and name = %(name)s
      order by version desc
      offset %(keep)s limit 1
  );

-- name: secret_get_latest
select v.version, v.ciphertext, v.created_at, k.master_key_id, k.wrapped_key
from {schema}.secret_version v
join {schema}.data_key k on k.tenant = v.tenant
where v.tenant = %(tenant)s and v.name = %(name)s
order by v.version desc
limit 1;

-- name: secret_get_version
select v.version, v.ciphertext, v.created_at, k.master_key_id, k.wrapped_key
from {schema}.secret_version v
join {schema}.data_key k on k.tenant = v.tenant
where v.tenant = %(tenant)s and v.name = %(name)s and v.version = %(version)s;

-- name: secret_list
select s.tenant, s.name,
       coalesce(array_agg(v.version order by v.version)
                filter (where v.version is not null), '{{}}') as versions,
       s.created_at, s.updated_at
from {schema}.secret s
left join {schema}.secret_version v on v.tenant = s.tenant and v.name = s.name
where (%(tenant)s::text is null or s.tenant = %(tenant)s::text)
  and (%(prefix)s::text is null or starts_with(s.name, %(prefix)s::text))
group by s.tenant, s.name
order by s.tenant, s.name;

-- name: secret_delete
delete from {schema}.secret
where tenant = %(tenant)s and name = %(name)s
returning last_version;

-- name: secret_version_delete
delete from {schema}.secret_version
where tenant = %(tenant)s and name = %(name)s and version = %(version)s
returning version;

-- name: secret_delete_if_empty
-- A secret lives while it has versions: removing its last version removes it.
delete from {schema}.secret s
where s.tenant = %(tenant)s and s.name = %(name)s
  and not exists (
      select 1 from {schema}.secret_version v
      where v.tenant = s.tenant and v.name = s.name
  );
