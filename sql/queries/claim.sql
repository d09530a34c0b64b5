-- Claiming: what a worker (or pgjobs.testing) takes to run, and when to look again.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: job_claim
-- Only jobs of the types this process has handlers for (%(job_types)s).
select id, job_type, organization, payload, attempt, max_attempts, timeout_seconds,
       checkpoint, lease_token
  from pgjobs.claim(%(worker)s, %(queues)s, %(n)s, %(lease_seconds)s, %(now)s,
                    %(job_types)s);

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

-- name: job_next_run_at_seconds
-- Seconds until the next queued or retrying job in these queues, of these job
-- types, is due (one index probe per priority, from where this session's
-- next claim starts: pgjobs.claim_floor); NULL when there is none.
select extract(epoch from min(x.run_at) - now()) as seconds
  from generate_series(0, 3) as p,
       lateral (select j.run_at from pgjobs.jobs j
                 where j.state in ('queued', 'retrying') and j.priority = p
                   and j.run_at >= pgjobs.claim_floor(%(queues)s, %(job_types)s, p)
                   and j.queue = any(%(queues)s) and j.job_type = any(%(job_types)s)
                 order by j.run_at limit 1) x;

-- name: job_active_count
-- Unfinished jobs in these queues, of these job types (waiting jobs included).
select count(*) from pgjobs.jobs
 where not pgjobs.is_finished(state) and queue = any(%(queues)s)
   and job_type = any(%(job_types)s);
