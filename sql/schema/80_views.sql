-- Views for operators in psql. Each runs with the querying role's rights
-- (security_invoker), so row-level security scopes them like the tables.

-- Per queue and priority: what is waiting for a worker, and for how long.
create view pgjobs.queue_depth with (security_invoker = true) as
select queue,
       priority,
       count(*) filter (where state = 'queued' and run_at <= now()) as queued,
       count(*) filter (where state = 'queued' and run_at > now())  as scheduled,
       count(*) filter (where state = 'running')                    as running,
       count(*) filter (where state = 'retrying')                   as retrying,
       count(*) filter (where state = 'waiting')                    as waiting,
       coalesce(extract(epoch from now() - min(run_at)
                        filter (where state = 'queued' and run_at <= now())), 0)
           as oldest_queued_seconds
  from pgjobs.jobs
 where not pgjobs.is_finished(state)
 group by queue, priority;

-- Per organization, job type and state.
create view pgjobs.job_counts with (security_invoker = true) as
select organization, job_type, state, count(*) as jobs
  from pgjobs.jobs
 group by organization, job_type, state;

-- Attempt durations per job type over the last hour (every finished attempt).
create view pgjobs.processing_times with (security_invoker = true) as
select job_type,
       count(*)                                                  as attempts,
       count(*) filter (where to_state = 'completed')            as completed,
       round(avg(duration_ms)::numeric, 3)                       as avg_ms,
       round((percentile_cont(0.5) within group (order by duration_ms))::numeric, 3) as p50_ms,
       round((percentile_cont(0.95) within group (order by duration_ms))::numeric, 3) as p95_ms,
       round(max(duration_ms)::numeric, 3)                       as max_ms
  from pgjobs.job_events
 where from_state = 'running' and to_state <> 'queued'
   and duration_ms is not null
   and at > now() - interval '1 hour'
 group by job_type;

-- Failed attempts per job type over the last 24 hours.
create view pgjobs.failure_rates with (security_invoker = true) as
select job_type,
       count(*)                                                       as attempts,
       count(*) filter (where to_state in ('retrying', 'dead'))       as failures,
       count(*) filter (where error_class = 'timeout')                as timeouts,
       count(*) filter (where to_state = 'dead')                      as dead,
       round(count(*) filter (where to_state in ('retrying', 'dead'))::numeric
             / nullif(count(*), 0), 4)                                as rate
  from pgjobs.job_events
 where from_state = 'running' and to_state in ('completed', 'retrying', 'dead')
   and at > now() - interval '24 hours'
 group by job_type;

-- The dead-letter queue: retry with pgjobs.retry(id).
create view pgjobs.dead_letter with (security_invoker = true) as
select id, organization, job_type, queue, attempt, max_attempts, last_error_class as error_class,
       last_error, payload, created_at, finished_at
  from pgjobs.jobs
 where state = 'dead';

-- Live worker processes: heartbeat within the last minute, and what they hold.
create view pgjobs.workers with (security_invoker = true) as
select w.name, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at,
       extract(epoch from now() - w.heartbeat_at) as heartbeat_age_seconds,
       count(j.id)                                  as running_jobs,
       coalesce(array_agg(j.id order by j.id) filter (where j.id is not null), '{}') as job_ids
  from pgjobs.worker_processes w
  left join pgjobs.jobs j on j.state = 'running' and j.worker = w.name
 where w.heartbeat_at > now() - interval '1 minute'
 group by w.name, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at;

-- Each schedule's next and last fire and how its last job fares
-- (pgjobs.schedules is the table, so the view has its own name).
create view pgjobs.schedule_status with (security_invoker = true) as
select s.organization, s.name, s.job_type, s.cron, s.timezone, s.enabled, s.catch_up,
       s.next_fire_at, s.last_fired_at, s.last_job_id, j.state as last_job_state,
       j.finished_at as last_job_finished_at, s.last_error, s.created_at
  from pgjobs.schedules s
  left join pgjobs.jobs j on j.id = s.last_job_id;

-- Job types that no live worker (heartbeat within the last minute, as in
-- pgjobs.workers) can run: none serves the type's queue with its handler.
-- runnable_jobs counts the jobs of the type that are due or retrying.
create view pgjobs.unserved_job_types with (security_invoker = true) as
select t.name as job_type, t.queue, t.handler,
       (select count(*) from pgjobs.jobs j
         where j.job_type = t.name and j.state in ('queued', 'retrying')) as runnable_jobs
  from pgjobs.job_types t
 where not exists (select from pgjobs.worker_processes w
                    where w.heartbeat_at > now() - interval '1 minute'
                      and t.queue = any(w.queues)
                      and (w.job_types is null or t.name = any(w.job_types)));
