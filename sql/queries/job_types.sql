-- Job types: the registry's writes and the worker's handler lookup.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: job_type_upsert
-- Registers a job type (the @pgjobs.job decorator); returns what the settings a
-- change of which is logged (queue, handler, attempts, timeout) were before,
-- if the type existed: every CTE reads the snapshot from before the write.
with old as (
    select queue, handler, max_attempts, timeout_seconds from pgjobs.job_types
     where name = %(name)s
),
written as (
    insert into pgjobs.job_types as t
           (name, handler, queue, priority, max_attempts, timeout_seconds, dedup_window_seconds,
            dedup_by_payload, rate_limit, rate_period_seconds, retry_base_seconds,
            retry_cap_seconds, enabled, cancel_policy)
    values (%(name)s, %(handler)s, %(queue)s, %(priority)s, %(max_attempts)s, %(timeout_seconds)s,
            %(dedup_window_seconds)s, %(dedup_by_payload)s, %(rate_limit)s,
            %(rate_period_seconds)s, %(retry_base_seconds)s, %(retry_cap_seconds)s, %(enabled)s,
            %(cancel_policy)s)
    on conflict (name) do update
       set handler = excluded.handler, queue = excluded.queue, priority = excluded.priority,
           max_attempts = excluded.max_attempts, timeout_seconds = excluded.timeout_seconds,
           dedup_window_seconds = excluded.dedup_window_seconds,
           dedup_by_payload = excluded.dedup_by_payload, rate_limit = excluded.rate_limit,
           rate_period_seconds = excluded.rate_period_seconds,
           retry_base_seconds = excluded.retry_base_seconds,
           retry_cap_seconds = excluded.retry_cap_seconds, enabled = excluded.enabled,
           cancel_policy = excluded.cancel_policy, updated_at = now()
    returning 1
)
select queue, handler, max_attempts, timeout_seconds from old;

-- name: job_type_get
select * from pgjobs.job_types where name = %(name)s;

-- name: job_type_may_write
select has_table_privilege('pgjobs.job_types', 'INSERT');

-- name: job_type_ensure
-- Creates a job type if missing, leaving an existing row (and its lock) alone.
-- Says whether the row is still uncommitted (written by this transaction), so
-- the caller caches "exists" only once a rollback can no longer undo it.
with written as (
    insert into pgjobs.job_types
           (name, handler, queue, priority, max_attempts, timeout_seconds, dedup_window_seconds,
            dedup_by_payload, rate_limit, rate_period_seconds, retry_base_seconds,
            retry_cap_seconds, enabled, cancel_policy)
    values (%(name)s, %(handler)s, %(queue)s, %(priority)s, %(max_attempts)s,
            %(timeout_seconds)s, %(dedup_window_seconds)s, %(dedup_by_payload)s, %(rate_limit)s,
            %(rate_period_seconds)s, %(retry_base_seconds)s, %(retry_cap_seconds)s, %(enabled)s,
            %(cancel_policy)s)
    on conflict (name) do nothing
    returning 1
)
select exists (select from written)
    or exists (select from pgjobs.job_types
                where name = %(name)s and xmin = pg_current_xact_id_if_assigned()::xid)
       as uncommitted;
