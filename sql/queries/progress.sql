-- What a running handler writes through its context, fenced by its lease.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: job_progress
-- Persists progress and tells LISTENers (a payload bounded whatever the row
-- holds); says whether a cancel is pending.
with p as (
    update pgjobs.jobs
       set progress = %(progress)s, progress_message = %(message)s
     where id = %(id)s and state = 'running' and lease_token = %(lease_token)s
    returning id, organization, progress, state, cancel_requested_at
)
select p.cancel_requested_at is not null as cancel_requested,
       pg_notify('pgjobs_progress', pgjobs.progress_event(p.id, p.organization, p.progress,
                                                          p.state)) is null as notified
  from p;

-- name: job_checkpoint
update pgjobs.jobs set checkpoint = %(checkpoint)s::jsonb
 where id = %(id)s and state = 'running' and lease_token = %(lease_token)s
returning cancel_requested_at is not null as cancel_requested;

-- name: job_cancel_requested
select cancel_requested_at is not null as cancel_requested
  from pgjobs.jobs where id = %(id)s and lease_token = %(lease_token)s;
