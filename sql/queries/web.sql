-- Statements behind the dashboard (pgjobs.web). Every one runs in a request's
-- transaction under the viewer's role and organization: row-level security
-- decides what each returns, exactly as for the Python API.

-- name: web_role_app
-- Requests of a dashboard scoped by organization_for run as pgjobs_app.
set local role pgjobs_app;

-- name: web_role_admin
-- An operator dashboard (no hooks) runs with pgjobs_admin's rights, never a superuser's.
set local role pgjobs_admin;

-- name: web_role_check
-- Whether the login role may take the role the dashboard's requests run under.
select pg_has_role(current_user, %(role)s, 'MEMBER') as member;

-- name: web_throughput
-- Finished attempts per minute over the last hour, the empty minutes included.
with minutes as (
    select generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') as minute
), counted as (
    select date_trunc('minute', at) as minute,
           count(*) filter (where to_state = 'completed') as completed,
           count(*) filter (where to_state in ('retrying', 'dead')) as failed
      from pgjobs.job_events
     where at >= date_trunc('minute', now()) - interval '59 minutes'
       and from_state = 'running' and to_state in ('completed', 'retrying', 'dead')
     group by 1
)
select m.minute, coalesce(c.completed, 0) as completed, coalesce(c.failed, 0) as failed
  from minutes m left join counted c using (minute)
 order by m.minute;

-- name: web_job_parents
select id, job_type, state from pgjobs.jobs where id = any(%(ids)s::bigint[]) order by id;

-- name: web_job_children
-- Jobs that depend on this one. A child can only depend on a job that already
-- existed, so its id is higher: the scan starts at the parent's id.
select id, job_type, state from pgjobs.jobs
 where id > %(id)s and depends_on @> array[%(id)s]::bigint[]
 order by id limit 100;

-- name: web_workers
select name, host, pid, queues, started_at, heartbeat_at, heartbeat_age_seconds,
       running_jobs, job_ids
  from pgjobs.workers order by name;

-- name: web_unserved_types
-- Enabled job types whose queue no live worker serves: their jobs will wait.
select t.name, t.queue,
       (select count(*) from pgjobs.jobs j
         where j.job_type = t.name and j.state in ('queued', 'retrying')) as runnable
  from pgjobs.job_types t
 where t.enabled
   and not exists (select from pgjobs.workers w where t.queue = any(w.queues))
 order by t.name;

-- name: web_schedules_exist
-- Periodic jobs arrived in a later migration: the page shows only once there are some.
select to_regclass('pgjobs.schedules') is not null as present;

-- name: web_schedules
select name, organization, job_type, cron, timezone, enabled, next_fire_at, last_fired_at,
       last_job_id
  from pgjobs.schedules
 order by organization nulls first, name
 limit 500;

-- name: web_schedules_any
select exists (select from pgjobs.schedules) as any;

-- name: web_fingerprint
-- What the list pages' live stream compares: cheap reads (partial indexes)
-- that change whenever a job of the viewer's scope is added, moves or ends.
select (select count(*) from pgjobs.jobs where state in ('queued', 'retrying')) as runnable,
       (select count(*) from pgjobs.jobs where state = 'running') as running,
       (select count(*) from pgjobs.jobs where state = 'waiting') as waiting,
       (select max(finished_at) from pgjobs.jobs
         where state in ('completed', 'dead', 'canceled')) as last_finished_at,
       (select max(id) from pgjobs.jobs) as last_id;
