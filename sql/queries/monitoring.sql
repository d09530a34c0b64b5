-- Monitoring: subscribe's LISTENs and the metrics behind `pgjobs metrics` and
-- Prometheus.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: listen_events
listen pgjobs_state;

-- name: listen_progress
listen pgjobs_progress;

-- name: metrics_sees_all
select pgjobs.sees_all() as sees_all;

-- name: metrics_queue_depth
select * from pgjobs.queue_depth order by queue, priority;

-- name: metrics_job_counts
select * from pgjobs.job_counts order by organization nulls first, job_type, state;

-- name: metrics_processing_times
select * from pgjobs.processing_times order by job_type;

-- name: metrics_failure_rates
select * from pgjobs.failure_rates order by job_type;

-- name: metrics_workers
select count(*) as workers, coalesce(sum(running_jobs), 0)::bigint as running_jobs
  from pgjobs.workers;

-- name: metrics_postgres_health
-- What a queue operator watches in Postgres itself.
-- Jobs are partitioned (0060): the figures add up every partition's.
select (select sum(s.n_dead_tup)::bigint from pg_stat_user_tables s
         where s.relid in (select relid from pg_partition_tree('pgjobs.jobs')))
           as jobs_dead_tuples,
       (select sum(s.n_live_tup)::bigint from pg_stat_user_tables s
         where s.relid in (select relid from pg_partition_tree('pgjobs.jobs')))
           as jobs_live_tuples,
       (select sum(pg_total_relation_size(t.relid))::bigint
          from pg_partition_tree('pgjobs.jobs') t) as jobs_total_bytes,
       -- clock_timestamp, not now(): this transaction may have begun before
       -- the oldest other one (a busy worker's), which made the age negative.
       (select coalesce(extract(epoch from clock_timestamp() - min(xact_start)), 0)
          from pg_stat_activity
         where (backend_xid is not null or backend_xmin is not null)
           and pid <> pg_backend_pid())  -- not this query's own transaction
           as oldest_transaction_seconds,
       pg_notification_queue_usage() as notify_queue_usage;

-- name: metrics_unserved_job_types
select job_type, queue, handler, runnable_jobs from pgjobs.unserved_job_types order by job_type;

-- name: job_state_confirm
-- subscribe: the job of a state event as the subscriber may see it (row-level
-- security), so that a forged NOTIFY cannot pass for a job's end.
select id, organization, job_type, state, attempt from pgjobs.jobs where id = %(id)s;
