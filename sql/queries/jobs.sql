-- Runtime statements of pgjobs, one per verb, loaded once by pgjobs/sql.py.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s is an optional clock: NULL means the database's now().

-- name: job_type_upsert
-- Registers a job type (the @pgjobs.job decorator); returns the stored row.
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
returning *;

-- name: job_type_get
select * from pgjobs.job_types where name = %(name)s;

-- name: job_enqueue
-- One job through pgjobs.enqueue_job: the new id, or the live duplicate's.
select id, duplicate
  from pgjobs.enqueue_job(job_type => %(job_type)s::text, payload => %(payload)s::jsonb,
                          organization => %(organization)s::text, queue => %(queue)s::text,
                          priority => %(priority)s::smallint, run_at => %(run_at)s::timestamptz,
                          dedup_key => %(dedup_key)s::text, depends_on => %(depends_on)s::bigint[],
                          max_attempts => %(max_attempts)s::int,
                          timeout_seconds => %(timeout_seconds)s::int);

-- name: job_enqueue_many
-- Many jobs in one INSERT; one row per input, in input order.
select ord, id, duplicate from pgjobs.enqueue_jobs(%(jobs)s::jsonb);

-- name: job_get
select id, job_type, organization, queue, priority, payload, state, run_at, attempt,
       max_attempts, timeout_seconds, dedup_key, depends_on, progress, progress_message,
       checkpoint, result, last_error, created_at, started_at, finished_at, canceled_by,
       worker, last_error_class, created_by
  from pgjobs.jobs where id = %(id)s;

-- name: job_cancel
select pgjobs.cancel(%(id)s) as state;

-- name: job_retry
select pgjobs.retry(%(id)s) as state;

-- name: job_list
-- Newest first, keyset on id (never OFFSET); every filter optional. The same
-- columns as job_get: both make the public Job record.
select id, job_type, organization, queue, priority, payload, state, run_at, attempt,
       max_attempts, timeout_seconds, dedup_key, depends_on, progress, progress_message,
       checkpoint, result, last_error, created_at, started_at, finished_at, canceled_by,
       worker, last_error_class, created_by
  from pgjobs.jobs
 where (%(organization)s::text is null or organization = %(organization)s)
   and (%(state)s::text is null or state = %(state)s)
   and (%(job_type)s::text is null or job_type = %(job_type)s)
   and (%(queue)s::text is null or queue = %(queue)s)
   and (%(since)s::timestamptz is null or created_at >= %(since)s)
   and (%(until)s::timestamptz is null or created_at < %(until)s)
   and (%(after_id)s::bigint is null or id < %(after_id)s)
 order by id desc
 limit %(limit)s;

-- name: job_history
-- Every state change and attempt of one job, oldest first.
select id, job_id, organization, job_type, attempt, from_state, to_state, worker,
       error_class, message, traceback, duration_ms, at, actor
  from pgjobs.job_events where job_id = %(id)s order by id;

-- name: job_state_counts
select state, count(*) as n from pgjobs.jobs group by state order by state;

-- name: job_claim
select id, job_type, organization, payload, attempt, max_attempts, timeout_seconds,
       checkpoint, lease_token
  from pgjobs.claim(%(worker)s, %(queues)s, %(n)s, %(lease_seconds)s, %(now)s);

-- name: job_next_run_at_seconds
-- Seconds until the next queued or retrying job in these queues is due (one
-- index probe per priority); NULL when there is none.
select extract(epoch from min(x.run_at) - now()) as seconds
  from generate_series(0, 3) as p,
       lateral (select j.run_at from pgjobs.jobs j
                 where j.state in ('queued', 'retrying') and j.priority = p
                   and j.queue = any(%(queues)s)
                 order by j.run_at limit 1) x;

-- name: job_active_count
-- Unfinished jobs in these queues (waiting jobs included).
select count(*) from pgjobs.jobs
 where not pgjobs.is_finished(state) and queue = any(%(queues)s);

-- name: job_complete_many
-- Ends successful attempts; a job whose cancel was requested meanwhile ends canceled.
-- %(results)s is a JSON array (null: no result). The per-job values are looked
-- up by position, not joined: a join with the arrays would be planned as a
-- loop over every running job for each element.
update pgjobs.jobs j
   set state = case when j.cancel_requested_at is null then 'completed' else 'canceled' end,
       result = nullif(%(results)s::jsonb -> (array_position(%(ids)s::bigint[], j.id) - 1),
                       'null'),
       finished_at = coalesce(%(now)s, now()),
       last_duration_ms = (%(durations)s::float8[])[array_position(%(ids)s::bigint[], j.id)],
       lease_expires_at = null
 where j.id = any(%(ids)s::bigint[]) and j.state = 'running'
   and j.lease_token = (%(tokens)s::bigint[])[array_position(%(ids)s::bigint[], j.id)]
returning j.id, j.state;

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

-- name: job_return_worker
-- Gives back every job a dead worker process held but had not started.
update pgjobs.jobs j
   set state = 'queued', attempt = greatest(j.attempt - 1, 0), worker = null,
       lease_expires_at = null, started_at = null
 where j.state = 'running' and j.lease_expires_at is not null and j.worker = %(worker)s
   and j.id <> all(%(except_ids)s::bigint[])
returning j.id;

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

-- name: lease_renew
-- The heartbeat: one statement renews every lease a worker process holds.
with beat as (
    update pgjobs.worker_processes set heartbeat_at = now() where name = %(worker)s
)
update pgjobs.jobs
   set lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
 where id = any(%(ids)s::bigint[]) and state = 'running' and worker = %(worker)s;

-- name: lease_rescue
-- Jobs whose worker stopped renewing the lease: the attempt counts, retry
-- policy applies (pgjobs.failed_attempt). One rescuer at a time, by a
-- transaction advisory lock.
update pgjobs.jobs j
   set (state, run_at, finished_at) = row((pgjobs.failed_attempt(
           cancel_requested => j.cancel_requested_at is not null, permanent => false,
           attempt => j.attempt, max_attempts => j.max_attempts,
           run_at => j.run_at, retry_base_seconds => t.retry_base_seconds,
           retry_cap_seconds => t.retry_cap_seconds, now => coalesce(%(now)s, now()))).*),
       last_error = 'lease expired: worker ' || coalesce(j.worker, '?') || ' stopped renewing it',
       last_error_class = 'lease_expired', last_traceback = null, last_duration_ms = null,
       lease_expires_at = null
  from pgjobs.job_types t
 where j.state = 'running' and j.lease_expires_at < coalesce(%(now)s, now())
   and t.name = j.job_type
   and pg_try_advisory_xact_lock(hashtext('pgjobs.lease_rescue'))
returning j.id, j.state, j.job_type, j.organization, j.attempt;

-- name: worker_register
insert into pgjobs.worker_processes (name, host, pid, queues)
values (%(worker)s, %(host)s, %(pid)s, %(queues)s)
on conflict (name) do update set heartbeat_at = now();

-- name: worker_unregister
delete from pgjobs.worker_processes where name = %(worker)s;

-- name: worker_forget_stale
-- Drops worker rows whose heartbeat is long gone (their jobs are rescued by lease).
delete from pgjobs.worker_processes
 where heartbeat_at < now() - make_interval(secs => %(stale_seconds)s);

-- name: backend_terminate
-- Stops queries a killed job process left running on the server.
select pg_terminate_backend(pid) from unnest(%(pids)s::int[]) as pid where pid > 0;

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

-- name: tenant_get
select pgjobs.current_organization();

-- name: tenant_set
-- Transaction-local: the scope ends with the transaction.
select set_config('pgjobs.organization', %(organization)s, true);

-- name: actor_set
-- Transaction-local, like the organization: who acts (jobs.created_by, history actor).
select set_config('pgjobs.actor', %(actor)s, true);

-- name: session_configure
-- Every worker session bounds its statements and idle transactions, and may
-- commit asynchronously and do without JIT compilation (NULL: as the server says).
select set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false),
       set_config('application_name', %(application_name)s, false),
       set_config('synchronous_commit',
                  coalesce(%(synchronous_commit)s, current_setting('synchronous_commit')), false),
       set_config('jit', coalesce(%(jit)s, current_setting('jit')), false);

-- name: job_transaction_begin
-- A handler's transaction: scoped to the job's organization (row-level security
-- then shows even a worker that one organization), bounded by its timeout.
select set_config('pgjobs.organization', %(organization)s, true),
       set_config('statement_timeout', %(statement_timeout)s, true);

-- name: job_type_handlers
select name, handler from pgjobs.job_types;

-- name: job_type_state_counts
select job_type, state, count(*) as n from pgjobs.jobs group by 1, 2 order by 1, 2;

-- name: testing_take_job
-- pgjobs.testing.run_job: one chosen job, due or not.
select * from pgjobs.take(%(worker)s,
                          array(select id from pgjobs.jobs
                                 where id = %(id)s and state in ('queued', 'retrying')
                                   for update),
                          %(lease_seconds)s, now());

-- name: testing_claim
-- pgjobs.testing.drain: the next due job, as a worker would claim it.
select * from pgjobs.claim(%(worker)s,
                           coalesce(%(queues)s::text[],
                                    array(select distinct queue from pgjobs.jobs
                                           where state in ('queued', 'retrying'))),
                           1, %(lease_seconds)s, %(now)s);

-- name: testing_handler
select handler from pgjobs.job_types where name = %(job_type)s;

-- name: jobs_vacuum_lock
-- Takes the vacuum lock when the jobs table has dead tuples to clear, this
-- role may vacuum it, and nobody is vacuuming it already (autovacuum included).
-- A vacuum reads every index whole, so a bigger table waits for more dead
-- tuples (a share of its live ones): its cost per job stays flat as it grows.
select pg_try_advisory_lock(%(key)s)
  from pg_stat_user_tables s
  join pg_class c on c.oid = s.relid
 where s.relid = 'pgjobs.jobs'::regclass
   and s.n_dead_tup >= greatest(%(threshold)s, %(scale)s * s.n_live_tup)
   and (pg_has_role(c.relowner, 'USAGE')
        or (select r.rolsuper from pg_roles r where r.rolname = current_user))
   and not exists (select from pg_stat_progress_vacuum v where v.relid = s.relid);

-- name: jobs_vacuum_unlock
select pg_advisory_unlock(%(key)s);

-- name: job_log_keys
-- What the supervisor's events about one job carry besides its id.
select job_type, organization, attempt from pgjobs.jobs where id = %(id)s;
