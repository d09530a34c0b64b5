-- Workers run only code registered in their own process (issue 12, item 4).
--
-- * worker_processes.job_types: the job types a process has handlers for, as
--   it registered them (NULL: a worker from before this migration, which may
--   run any type).
-- * pgjobs.claim takes the claiming process's job types and leaves the jobs
--   of other types for a worker that has their handler: a type no worker here
--   can run is never claimed, retried and buried by one that cannot.
-- * pgjobs.unserved_job_types: the types no live worker can run, and how many
--   of their jobs wait for one (`pgjobs metrics` shows them too).

alter table pgjobs.worker_processes add column job_types text[];

-- The same walk as before (see 0002 and sql/schema/50_claim.sql for why its
-- settings); the job type is one more filter on rows the index scan already
-- visits for their queue. NULL job_types: every type (pgjobs.testing, and
-- workers from before this migration, whose five-argument call still matches).
drop function pgjobs.claim(text, text[], int, double precision, timestamptz);
create function pgjobs.claim(worker text, queues text[], n int,
                             lease_seconds double precision, now timestamptz default null,
                             job_types text[] default null)
returns table (id bigint, job_type text, organization text, payload jsonb, attempt int,
               max_attempts int, timeout_seconds int, checkpoint jsonb, lease_token bigint)
language plpgsql
set enable_bitmapscan = off
set enable_seqscan = off
set plan_cache_mode = force_generic_plan
set jit = off
as $$
declare
    t       timestamptz := coalesce(claim.now, now());
    ids     bigint[];
    limited boolean;
begin
    -- One statement. Each priority is its own range scan of jobs_runnable_idx
    -- over due rows only (delayed jobs are never read), the most urgent first;
    -- the outer LIMIT stops pulling, and so locking, once n rows are in hand.
    select array_agg(c.id order by c.priority, c.run_at, c.id),
           bool_or(jt.rate_limit is not null)
      into ids, limited
      from (select d.* from generate_series(0, 3) as p(priority)
             cross join lateral (
                   select j.id, j.job_type, j.priority, j.run_at from pgjobs.jobs j
                    where j.state in ('queued', 'retrying') and j.priority = p.priority
                      and j.run_at <= t and j.queue = any(queues)
                      and (claim.job_types is null or j.job_type = any(claim.job_types))
                    order by j.run_at, j.id
                    limit n
                      for update skip locked) d
             limit n) c
      join pgjobs.job_types jt on jt.name = c.job_type;
    if ids is null then
        return;
    end if;
    if limited then
        ids := pgjobs.rate_take(ids, t);
    end if;
    return query select * from pgjobs.take(claim.worker, ids, lease_seconds, t);
end
$$;

revoke execute on function pgjobs.claim(text, text[], int, double precision, timestamptz, text[])
    from public;
grant execute on function pgjobs.claim(text, text[], int, double precision, timestamptz, text[])
    to pgjobs_worker;

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

do $$
begin
    if pg_has_role('pgjobs_owner', 'MEMBER') then
        alter view pgjobs.unserved_job_types owner to pgjobs_owner;
    end if;
end
$$;
revoke all on pgjobs.unserved_job_types from public;
grant select on pgjobs.unserved_job_types to pgjobs_worker, pgjobs_admin;
