-- The claim: a worker takes runnable jobs under a lease.

-- Claims up to n runnable jobs for one worker, most urgent first. Each priority
-- is a range scan of jobs_runnable_idx over due rows only (delayed jobs
-- are never read). Rate-limited types take from their window's budget; jobs
-- past it move their run_at to the next window instead of failing.
--
-- Its settings keep it on that walk, and cheap:
-- * No bitmap scan (nor sequential scan). With statistics taken while the
--   queue was short, the planner prefers a bitmap scan that reads and sorts
--   every due row: harmless on a short queue, a collapse once a backlog
--   builds, since each claim then costs the whole backlog.
-- * Generic plans: a statement with parameters is otherwise planned afresh
--   for its values while the planner judges that cheaper, which it does here;
--   planning was three quarters of a 10-job claim's backend time (1.35 ms of
--   CPU, 0.32 ms with generic plans), and the generic plan is the right one.
-- * No JIT: past a few million rows the cost estimates of these short
--   statements cross jit_above_cost, and compiling them took two fifths of
--   the workers' database time in a sustained run.
--
-- job_types: the types the claiming process has handlers for; the jobs of other
-- types wait for a worker that has theirs (one more filter on rows the scan
-- visits for their queue anyway). NULL: every type (pgjobs.testing).
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

-- Starts an attempt of each given job, which the caller has locked: one lease
-- token for the batch, returned in the order given. The claim's second half,
-- and what pgjobs.testing uses to run one chosen job. PL/pgSQL, so its plan is
-- cached per session; generic, without JIT, and never a sequential scan (it
-- finds rows by id), for the claim's reasons.
create function pgjobs.take(worker text, ids bigint[], lease_seconds double precision,
                            t timestamptz)
returns table (id bigint, job_type text, organization text, payload jsonb, attempt int,
               max_attempts int, timeout_seconds int, checkpoint jsonb, lease_token bigint)
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
as $$
declare
    token bigint := nextval('pgjobs.lease_token_seq');
begin
    return query
    with claimed as (
        update pgjobs.jobs j
           set state = 'running', attempt = j.attempt + 1, worker = take.worker,
               lease_token = token, started_at = t, finished_at = null,
               lease_expires_at = t + make_interval(secs => lease_seconds),
               last_duration_ms = null
         where j.id = any(ids)
           and j.state in ('waiting', 'queued', 'running', 'retrying')  -- jobs_active only
        returning j.id, j.job_type, j.organization, j.payload, j.attempt, j.max_attempts,
                  j.timeout_seconds, j.checkpoint, j.lease_token
    )
    select c.* from claimed c order by array_position(ids, c.id);
end
$$;

-- Takes rate budget for locked candidate jobs; returns the ids allowed to run
-- now and moves the others to the start of their next window.
create function pgjobs.rate_take(ids bigint[], t timestamptz) returns bigint[]
language plpgsql as $$
declare
    g       record;
    granted bigint[] := '{}';
    w       pgjobs.rate_windows;
    room    int;
begin
    for g in
        select j.job_type, coalesce(j.organization, '') as org, jt.rate_limit,
               jt.rate_period_seconds, array_agg(j.id order by j.priority, j.run_at, j.id) as members
          from pgjobs.jobs j join pgjobs.job_types jt on jt.name = j.job_type
         where j.id = any(ids) and j.state in ('queued', 'retrying')  -- jobs_active only
         group by 1, 2, 3, 4
    loop
        if g.rate_limit is null then
            granted := granted || g.members;
            continue;
        end if;
        insert into pgjobs.rate_windows as r (organization, job_type, window_start, used)
        values (g.org, g.job_type, t, 0)
        on conflict (organization, job_type) do update
           set window_start = case when r.window_start + make_interval(secs => g.rate_period_seconds) <= t
                                   then t else r.window_start end,
               used = case when r.window_start + make_interval(secs => g.rate_period_seconds) <= t
                           then 0 else r.used end
        returning * into w;
        room := greatest(g.rate_limit - w.used, 0);
        granted := granted || g.members[1:room];
        update pgjobs.rate_windows r set used = r.used + least(room, cardinality(g.members))
         where r.organization = g.org and r.job_type = g.job_type;
        if cardinality(g.members) > room then
            update pgjobs.jobs j
               set run_at = w.window_start + make_interval(secs => g.rate_period_seconds)
             where j.id = any(g.members[room + 1:]) and j.state in ('queued', 'retrying');
        end if;
    end loop;
    return granted;
end
$$;
