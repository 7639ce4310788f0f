-- Retention, max queued age, job events, handler progress, dead-letter redrive.

-- max_queued_age_s: a job that waits longer than this to start (counted from when it became
-- runnable) expires: it fails and is dead-lettered. Null: jobs wait forever.
-- events: record every state change of the queue's jobs in job_event (failures always are).
alter table queue
    add column max_queued_age_s double precision
        check (max_queued_age_s is null or max_queued_age_s > 0),
    add column events boolean not null default false;

-- progress: the last value a handler reported with job.progress().
-- origin_queue/origin_id: on a dead-letter copy, the queue and job it was copied from;
-- redrive moves the copy back there.
alter table job
    add column progress jsonb,
    add column origin_queue text,
    add column origin_id uuid;

-- Retention walks one queue's finished jobs oldest first and stops at the cutoff, so a
-- pass costs what it deletes, whatever the history's size. Only finished jobs are in it.
create index job_retention_idx on job (queue, finished_at)
    where state in ('completed', 'failed', 'cancelled');

-- An append-only log of job state changes. No foreign key to job: appending must never
-- wait on, or fail with, the job row; the statements that delete jobs delete their events
-- in the same statement (retention, job_delete, queue_delete).
create table job_event (
    id         bigint generated always as identity primary key,
    job_id     uuid not null,
    queue      text not null,
    at         timestamptz not null,
    kind       text not null,
    from_state job_state,
    to_state   job_state,
    attempt    integer not null,
    data       jsonb
);

-- One job's history (read, and deleted with the job).
create index job_event_job_idx on job_event (job_id);

-- A queue's events by time (queue_events, with or without `since`).
create index job_event_queue_idx on job_event (queue, at, id);
