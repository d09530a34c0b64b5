-- Reading and steering jobs: get, cancel, retry, list, history, counts.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

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
-- columns as job_get: both make the public Job record. With no organization
-- asked, a session scoped to one lists that one's jobs: row-level security
-- already limits the rows to it, but only a condition the planner sees finds
-- them by (organization, id); without one, a small organization's page walked
-- every organization's jobs newest first. So exactly one branch runs: the
-- organization asked or scoped, or every job when there is neither (an
-- operator's or a worker's listing, which row-level security lets see all).
with listed as not materialized (
    select id, job_type, organization, queue, priority, payload, state, run_at, attempt,
           max_attempts, timeout_seconds, dedup_key, depends_on, progress, progress_message,
           checkpoint, result, last_error, created_at, started_at, finished_at, canceled_by,
           worker, last_error_class, created_by
      from pgjobs.jobs
     where (%(state)s::text is null or state = %(state)s)
       and (%(job_type)s::text is null or job_type = %(job_type)s)
       and (%(queue)s::text is null or queue = %(queue)s)
       and (%(since)s::timestamptz is null or created_at >= %(since)s)
       and (%(until)s::timestamptz is null or created_at < %(until)s)
       and (%(after_id)s::bigint is null or id < %(after_id)s)
), scope (organization) as (
    select coalesce(%(organization)s::text, pgjobs.current_organization())
)
(select * from listed
  where organization = (select organization from scope)
  order by id desc limit %(limit)s)
union all
(select * from listed
  where (select organization from scope) is null
  order by id desc limit %(limit)s)
order by id desc
limit %(limit)s;

-- name: job_history
-- Every state change and attempt of one job, oldest first.
select id, job_id, organization, job_type, attempt, from_state, to_state, worker,
       error_class, message, traceback, duration_ms, at, actor
  from pgjobs.job_events where job_id = %(id)s order by id;

-- name: job_state_counts
select state, count(*) as n from pgjobs.jobs group by state order by state;

-- name: job_type_state_counts
select job_type, state, count(*) as n from pgjobs.jobs group by 1, 2 order by 1, 2;

-- name: job_log_keys
-- What the supervisor's events about one job carry besides its id.
select job_type, organization, attempt from pgjobs.jobs where id = %(id)s;
-- Statements behind subscribe, metrics and retention.
