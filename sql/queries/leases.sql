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
-- The process's row: the job types it has handlers for
-- (pgjobs.unserved_job_types), and this session among its backend pids (see
-- worker_session_add).
insert into pgjobs.worker_processes as w (name, host, pid, queues, job_types, backend_pids)
values (%(worker)s, %(host)s, %(pid)s, %(queues)s, %(job_types)s, array[pg_backend_pid()])
on conflict (name) do update
   set heartbeat_at = now(), job_types = excluded.job_types,
       backend_pids = array(select distinct p from unnest(w.backend_pids || pg_backend_pid()) p
                             where p in (select a.pid from pg_stat_activity a));

-- name: worker_session_add
-- Records this session as one of the worker process's (pids of sessions that
-- ended are dropped), for worker_sessions_end to find.
update pgjobs.worker_processes w
   set backend_pids = array(select distinct p from unnest(w.backend_pids || pg_backend_pid()) p
                             where p in (select a.pid from pg_stat_activity a))
 where w.name = %(worker)s;

-- name: worker_sessions_end
-- Terminates the sessions of worker processes whose leases expired, before
-- lease_rescue ends their attempts: a dead attempt's query, and the locks its
-- transaction holds, must not hold up the retry. One rescuer at a time: the
-- caller holds the rescue turn (maintenance_lease_take) in the same
-- transaction, and runs it only with sessions of its own (not behind a pooler,
-- whose process ids are made up). A recorded pid counts only while its
-- application_name still names the worker's OS pid ('pgjobs <purpose> <pid>'),
-- and only sessions this role may signal are asked.
select count(pg_terminate_backend(a.pid))
  from pgjobs.worker_processes w
  join pg_stat_activity a
    on a.pid = any(w.backend_pids)
   and a.application_name like ('pgjobs %% ' || w.pid::text)
 where w.name in (select j.worker from pgjobs.jobs j
                   where j.state = 'running' and j.lease_expires_at < coalesce(%(now)s, now()))
   and a.pid <> pg_backend_pid()
   and (a.usesysid = (select r.oid from pg_roles r where r.rolname = current_user)
        or (select r.rolsuper from pg_roles r where r.rolname = current_user));

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

-- name: job_return_crashed
-- Settles the jobs a process that died on its own (a crash, not our kill) held
-- but had not started. Any of them may be what killed it (a claim it could not
-- read, say): each goes back uncounted once, marked 'crash_unstarted'; a job
-- whose last attempt already ended with a dying process ('crash_unstarted' or
-- 'crash') has its attempt counted (pgjobs.failed_attempt, retry policy), so a
-- job that kills every process taking it ends dead instead of looping forever.
with held as (
    select j.id from pgjobs.jobs j
     where j.state = 'running' and j.worker = %(worker)s
       and j.id <> all(%(except_ids)s::bigint[])
),
counted as (
    update pgjobs.jobs j
       set (state, run_at, finished_at) = row((pgjobs.failed_attempt(
               cancel_requested => j.cancel_requested_at is not null, permanent => false,
               attempt => j.attempt, max_attempts => j.max_attempts,
               run_at => j.run_at, retry_base_seconds => t.retry_base_seconds,
               retry_cap_seconds => t.retry_cap_seconds, now => now())).*),
           last_error = 'worker process ' || %(worker)s
                        || ' died holding it, again before starting it: ' || %(reason)s,
           last_error_class = 'crash', last_traceback = null, last_duration_ms = null,
           lease_expires_at = null
      from pgjobs.job_types t
     where j.id in (select id from held) and j.state = 'running'
       and j.last_error_class in ('crash_unstarted', 'crash') and t.name = j.job_type
    returning j.id, j.state
),
returned as (
    update pgjobs.jobs j
       set state = 'queued', attempt = greatest(j.attempt - 1, 0), worker = null,
           lease_expires_at = null, started_at = null,
           last_error = 'worker process ' || %(worker)s
                        || ' died holding it before starting it: ' || %(reason)s,
           last_error_class = 'crash_unstarted'
     where j.id in (select id from held) and j.state = 'running'
       and j.last_error_class is distinct from 'crash_unstarted'
       and j.last_error_class is distinct from 'crash'
    returning j.id, j.state
)
select id, state from counted union all select id, state from returned;

-- name: job_cancels_confirmed
-- A cancel NOTIFY is a hint: of these running attempts (id and lease token),
-- the ones whose cancel pgjobs.cancel really requested.
select j.id from pgjobs.jobs j
  join unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) as r(id, lease_token)
    on j.id = r.id and j.lease_token = r.lease_token
 where j.state = 'running' and j.cancel_requested_at is not null;
