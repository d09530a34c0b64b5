-- Leases and worker processes: the heartbeat, the rescue of expired leases,
-- and the settlement of a process that died.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

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
-- policy applies (pgjobs.failed_attempt). One rescuer at a time: the caller
-- holds the rescue turn (maintenance_lease_take) in the same transaction.
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

-- name: job_return_worker
-- Gives back every job a dead worker process held but had not started.
update pgjobs.jobs j
   set state = 'queued', attempt = greatest(j.attempt - 1, 0), worker = null,
       lease_expires_at = null, started_at = null
 where j.state = 'running' and j.lease_expires_at is not null and j.worker = %(worker)s
   and j.id <> all(%(except_ids)s::bigint[])
returning j.id;

-- name: backend_terminate
-- Stops queries a killed job process left running on the server.
select pg_terminate_backend(pid) from unnest(%(pids)s::int[]) as pid where pid > 0;

-- name: job_cancels_requested
-- Which of the attempts a supervisor's processes run (job id and lease token)
-- had a cancel requested: how cancels are found without LISTEN (pooler mode).
select j.id
  from unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) as r(id, token)
  join pgjobs.jobs j on j.id = r.id
 where j.state = 'running' and j.lease_token = r.token and j.cancel_requested_at is not null;
