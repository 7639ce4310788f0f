-- Uniqueness and throttling: singleton keys with per-queue policies, throttle and debounce
-- windows. Every rule is a (partial) unique index, so it holds for any number of senders
-- and workers, whatever their transactions do; sends use ON CONFLICT, never check-then-insert.

-- policy: what a job's singleton_key means in this queue.
--   standard   no per-key rule; a singleton_key only keys throttle and debounce windows.
--   short      at most one queued job per key (a job waiting for its first start).
--   singleton  at most one active job per key; the others wait their turn, in dispatch order.
--   stately    short and singleton together: at most one queued and one active per key.
--   exclusive  at most one job per key that is queued, retrying or active.
-- Retrying jobs (waiting after a failed attempt) do not count as queued: a retry never
-- collides with a newer send.
alter table queue
    add column policy text not null default 'standard'
        check (policy in ('standard', 'short', 'singleton', 'stately', 'exclusive'));

-- singleton_policy: the queue's policy when a job with a key was sent (null without a key).
-- Like the retry policy, each job keeps its own copy, so the indexes below never join the
-- queue table and a policy change applies to the jobs sent after it.
-- singleton_on: start of the throttle window the job was sent in.
-- debounce_on: start of the debounce window the job collects sends of.
alter table job
    add column singleton_key text,
    add column singleton_policy text,
    add column singleton_on timestamptz,
    add column debounce_on timestamptz;

-- short, stately: one queued job per key.
create unique index job_singleton_queued_idx on job (queue, singleton_key)
    where state = 'queued' and singleton_policy in ('short', 'stately');

-- singleton, stately: one active job per key. Fetch only activates a job of such a key
-- when job_singleton_turn says it may, so it never runs into this index (an UPDATE cannot
-- skip a conflict); the index is the guarantee, the function the way around it.
create unique index job_singleton_active_idx on job (queue, singleton_key)
    where state = 'active' and singleton_policy in ('singleton', 'stately');

-- exclusive: one job per key queued, retrying or active. Moves between these states
-- (fetch, fail, release) never add a second one, so only sends and requeues can conflict.
create unique index job_singleton_exclusive_idx on job (queue, singleton_key)
    where state in ('queued', 'retrying', 'active') and singleton_policy = 'exclusive';

-- Throttle: one job per key per window, whatever became of it (a cancelled one frees it).
create unique index job_throttle_idx on job (queue, singleton_key, singleton_on)
    where singleton_on is not null and state <> 'cancelled';

-- Debounce on standard and singleton queues: one queued job per key per window, which
-- later sends of the window update. (Short, stately and exclusive queues debounce into the
-- key's one queued job, through their own index above.)
create unique index job_debounce_idx on job (queue, singleton_key, debounce_on)
    where debounce_on is not null and state = 'queued'
      and singleton_policy in ('standard', 'singleton');

-- The waiting jobs of one-active keys in dispatch order: job_singleton_turn's "whose turn".
create index job_singleton_waiting_idx on job (queue, singleton_key, priority desc, start_after, id)
    where state in ('queued', 'retrying') and singleton_policy in ('singleton', 'stately');

-- Start of the window of `width_s` seconds that `at` falls in: windows are aligned on the
-- Unix epoch, so every process computes the same ones. Null width, null window.
create function job_window_start(at timestamptz, width_s double precision)
returns timestamptz
language sql immutable strict
as $$
    select to_timestamp((floor(extract(epoch from at)::numeric / width_s::numeric)
                         * width_s::numeric)::double precision)
$$;

-- Whether fetch may activate job `p_id` of one-active key `p_key` now: no job of the key is
-- active, and `p_id` is the key's first runnable waiting job in dispatch order (so one
-- fetch never picks two jobs of a key, and a key's jobs run in order).
--
-- Why it is exact across concurrent fetchers: before saying yes it takes a
-- transaction-scoped advisory lock on the key, without waiting (a key another fetcher is
-- activating is skipped this time), and reads again. Being volatile, its queries take a new
-- snapshot, which shows every activation committed before the lock was granted; the lock is
-- held until the caller commits, so no other fetch can activate the key in between. The
-- first, unlocked reads answer no for busy keys and for jobs that are not their key's next,
-- so a fetch only locks the keys it may activate (a scan over the backlog of thousands of
-- busy keys takes no locks). The lock key mixes the schema, so schemas never contend.
create function job_singleton_turn(
    p_id uuid, p_queue text, p_key text, p_now timestamptz
) returns boolean
language plpgsql volatile
set search_path from current
as $$
declare
    locked boolean := false;
begin
    loop
        if exists (
            select 1 from job a
            where a.queue = p_queue and a.singleton_key = p_key
              and a.state = 'active' and a.singleton_policy in ('singleton', 'stately')
        ) then
            return false;
        end if;
        if p_id is distinct from (
            select w.id from job w
            where w.queue = p_queue and w.singleton_key = p_key
              and w.state in ('queued', 'retrying')
              and w.singleton_policy in ('singleton', 'stately')
              and w.start_after <= coalesce(p_now, now())
            order by w.priority desc, w.start_after, w.id
            limit 1
        ) then
            return false;
        end if;
        if locked then
            return true;
        end if;
        if not pg_try_advisory_xact_lock(
            hashtextextended(current_schema() || '.singleton' || chr(1) || p_queue || chr(1) || p_key, 0)
        ) then
            return false;
        end if;
        locked := true;
    end loop;
end
$$;
