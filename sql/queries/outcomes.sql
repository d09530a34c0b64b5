-- How an attempt ends: completed, failed, or given back unstarted. Every write
-- is fenced by the claim's lease token.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: job_complete_many
-- Ends successful attempts; a job whose cancel was requested meanwhile ends canceled.
-- %(results)s is a JSON array (null: no result). A function for its plan
-- (pgjobs.complete_many, 50_claim.sql): never a walk over other jobs' rows.
select id, state
  from pgjobs.complete_many(%(ids)s::bigint[], %(tokens)s::bigint[], %(results)s::jsonb,
                            %(durations)s::float8[], %(now)s::timestamptz);

-- name: job_fail_many
-- Ends failed attempts: retrying after a backoff while attempts remain, dead
-- when they are spent or the error is permanent, canceled if cancel was asked
-- (pgjobs.failed_attempt).
update pgjobs.jobs j
   set (state, run_at, finished_at) = row((pgjobs.failed_attempt(
           cancel_requested => j.cancel_requested_at is not null or f.error_class = 'canceled',
           permanent => f.permanent, attempt => j.attempt, max_attempts => j.max_attempts,
           run_at => j.run_at, retry_base_seconds => t.retry_base_seconds,
           retry_cap_seconds => t.retry_cap_seconds, now => coalesce(%(now)s, now()))).*),
       last_error = f.message, last_error_class = f.error_class, last_traceback = f.traceback,
       last_duration_ms = f.duration_ms, lease_expires_at = null
  from unnest(%(ids)s::bigint[], %(tokens)s::bigint[], %(error_classes)s::text[],
              %(messages)s::text[], %(tracebacks)s::text[], %(permanent)s::bool[],
              %(durations)s::float8[])
       as f(id, lease_token, error_class, message, traceback, permanent, duration_ms),
       pgjobs.job_types t
 where j.id = f.id and j.state = 'running' and j.lease_token = f.lease_token
   and t.name = j.job_type
returning j.id, j.state, j.run_at;

-- name: job_return_many
-- Gives claimed jobs back to the queue without counting the attempt (shutdown).
update pgjobs.jobs j
   set state = 'queued', attempt = greatest(j.attempt - 1, 0), worker = null,
       lease_expires_at = null, started_at = null
  from unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) as r(id, lease_token)
 where j.id = r.id and j.state = 'running' and j.lease_token = r.lease_token
returning j.id;
