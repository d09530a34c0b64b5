-- The claim: a worker takes runnable jobs under a lease.

-- Where a claim starts its walk while dead entries cannot go (see pgjobs.claim):
-- how far behind the claim's clock a hint stays, so that a job committed this
-- soon after its run_at is never passed; how long a session walks from hints
-- before it walks a priority whole again; and the hint's times, as microseconds
-- since the epoch (a bigint, exact, whatever the session's DateStyle).
create function pgjobs.claim_hint_lag() returns interval
language sql immutable parallel safe as $$ select interval '1 second' $$;

create function pgjobs.claim_rescan_after() returns interval
language sql immutable parallel safe as $$ select interval '2 seconds' $$;

create function pgjobs.claim_hint_us(t timestamptz) returns bigint
language sql stable parallel safe as $$
    select case when t = '-infinity' then -9000000000000000000
                else (extract(epoch from t) * 1000000)::bigint end
$$;

create function pgjobs.claim_hint_time(us bigint) returns timestamptz
language sql stable parallel safe as $$
    select case when us <= -9000000000000000000 then '-infinity'::timestamptz
                else timestamptz 'epoch' + us * interval '1 microsecond' end
$$;

-- Moved by every job that becomes runnable with a run_at already well past
-- (a dependent job its parents released, pgjobs.retry, an explicit past
-- run_at): a claim that sees it move walks from the start again. Read by the
-- claim, never a key of anything.
create sequence pgjobs.claim_rewinds;

-- The pieces of a claim's hint that pgjobs.claim and pgjobs.claim_floor share:
-- the fingerprint of the queues and job types a hint is for, this session's
-- hint as its twelve numbers (NULL when it is not twelve numbers), and whether
-- those hold for a claim with a fingerprint at clock after rewinds moves of
-- pgjobs.claim_rewinds (made by a walk claim_rescan_after before clock at
-- most). Plain SQL expressions, so that the planner inlines them into the
-- callers' own: no call of their own. Each takes what it uses more than once
-- (the parts, the clock) ready-made from the caller, which inlining needs.
create function pgjobs.claim_hint_fingerprint(queues text[], job_types text[]) returns text
language sql stable parallel safe as $$
    select hashtext(queues::text || '|' || coalesce(job_types::text, '*'))::text
$$;

create function pgjobs.claim_hint_parts() returns bigint[]
language sql stable parallel safe as $$
    select case when current_setting('pgjobs.claim_hint', true) ~ '^-?\d{1,19}( -?\d{1,19}){11}$'
                then string_to_array(current_setting('pgjobs.claim_hint', true), ' ')::bigint[] end
$$;

create function pgjobs.claim_hint_holds(parts bigint[], fingerprint text, rewinds bigint,
                                        clock timestamptz) returns boolean
language sql stable parallel safe as $$
    select parts[1]::text = fingerprint and parts[2] = rewinds
           and pgjobs.claim_hint_time(parts[3]) between clock - pgjobs.claim_rescan_after() and clock
$$;

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
-- Where each walk starts (issue 19, a transaction left open): a claimed job
-- leaves its entry in jobs_runnable_idx, pointing at a row version that no
-- VACUUM may remove, nor any scan mark dead, while an older snapshot lives; a
-- walk from the start of its priority steps over every job claimed since
-- (100,000 of them: 8 ms a claim, where it was 0.5). So each session keeps a
-- hint (the setting pgjobs.claim_hint, its own, rolled back with a failed
-- claim): per priority, the key of the first job its last claim took, or the
-- claim's clock when it found the priority empty, never later than that clock
-- less claim_hint_lag; the next claim walks from there. What a hint could
-- pass is a job that became runnable below it afterwards: one committed more
-- than claim_hint_lag after its run_at (a long enqueueing transaction), a job
-- another claim had locked and gave back by failing, or one released with an
-- old run_at, which moves pgjobs.claim_rewinds (jobs_claim_rewind) so every
-- session walks whole again. The hint holds only for the same queues and job
-- types, the same rewinds count, a clock not gone back, and claim_rescan_after
-- from the walk that made it, so any job passed is claimed within that time.
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
    clock   timestamptz := clock_timestamp();
    fp      text := pgjobs.claim_hint_fingerprint(claim.queues, claim.job_types);
    rewinds bigint := (select r.last_value from pgjobs.claim_rewinds r);
    parts   bigint[] := pgjobs.claim_hint_parts();
    stamp   timestamptz := clock;
    from_at timestamptz[] := array_fill('-infinity'::timestamptz, array[4]);
    from_id bigint[] := array_fill(0::bigint, array[4]);
    floor   timestamptz := t - pgjobs.claim_hint_lag();
    ids     bigint[];
    prios   int[];
    run_ats timestamptz[];
    taken   boolean[] := array_fill(false, array[4]);
    limited boolean;
    p       int;
begin
    -- fingerprint, rewinds, stamp, clock, then (run_at, id) for priorities 0-3.
    -- Only on the real clock: a claim given its own (pgjobs.testing, tests)
    -- walks whole and leaves no hint, since under a clock held still jobs
    -- become due below any key it took (a retry's backoff counted from the
    -- real now lands before the run_at of the attempt it follows).
    if claim.now is null and pgjobs.claim_hint_holds(parts, fp, rewinds, clock)
       and pgjobs.claim_hint_time(parts[4]) <= t then
        stamp := pgjobs.claim_hint_time(parts[3]);
        for p in 0..3 loop
            from_at[p + 1] := pgjobs.claim_hint_time(parts[5 + 2 * p]);
            from_id[p + 1] := parts[6 + 2 * p];
        end loop;
    end if;

    -- One statement. Each priority is its own range scan of jobs_runnable_idx
    -- over due rows from its hint only (delayed jobs are never read), the most
    -- urgent first; the outer LIMIT stops pulling, and so locking, once n rows
    -- are in hand.
    select array_agg(c.id order by c.priority, c.run_at, c.id),
           array_agg(c.priority order by c.priority, c.run_at, c.id),
           array_agg(c.run_at order by c.priority, c.run_at, c.id),
           bool_or(jt.rate_limit is not null)
      into ids, prios, run_ats, limited
      from (select d.* from generate_series(0, 3) as p(priority)
             cross join lateral (
                   select j.id, j.job_type, j.priority, j.run_at from pgjobs.jobs j
                    where j.state in ('queued', 'retrying') and j.priority = p.priority
                      and (j.run_at, j.id) >= (from_at[p.priority + 1], from_id[p.priority + 1])
                      and j.run_at <= t and j.queue = any(queues)
                      and (claim.job_types is null or j.job_type = any(claim.job_types))
                    order by j.run_at, j.id
                    limit n
                      for update skip locked) d
             limit n) c
      join pgjobs.job_types jt on jt.name = c.job_type;

    -- The next hints: the first job taken per priority; a priority walked to
    -- its end (fewer than n taken in all) and found empty starts at the clock.
    for i in 1..coalesce(cardinality(ids), 0) loop
        p := prios[i];
        if not taken[p + 1] then
            taken[p + 1] := true;
            from_at[p + 1] := run_ats[i];
            from_id[p + 1] := ids[i];
        end if;
    end loop;
    for p in 0..3 loop
        if from_at[p + 1] > floor
           or (not taken[p + 1] and coalesce(cardinality(ids), 0) < n) then
            from_at[p + 1] := floor;
            from_id[p + 1] := 0;
        end if;
    end loop;
    if claim.now is null then
        perform set_config('pgjobs.claim_hint', concat_ws(' ', fp, rewinds,
            pgjobs.claim_hint_us(stamp), pgjobs.claim_hint_us(t),
            pgjobs.claim_hint_us(from_at[1]), from_id[1], pgjobs.claim_hint_us(from_at[2]),
            from_id[2], pgjobs.claim_hint_us(from_at[3]), from_id[3],
            pgjobs.claim_hint_us(from_at[4]), from_id[4]),
            false);
    end if;

    if ids is null then
        return;
    end if;
    if limited then
        ids := pgjobs.rate_take(ids, t);
    end if;
    return query select * from pgjobs.take(claim.worker, ids, lease_seconds, t);
end
$$;

-- Where this session's next claim of these queues and job types will start
-- walking the given priority: the run_at of its hint while the hint holds,
-- else -infinity. The worker's look for the next due job (job_next_run_at_seconds)
-- starts there too, so that it steps over no more dead entries than the claim
-- and never reports as due a job the next claim would not reach (a job below
-- the hint waits for the claim that walks whole, within claim_rescan_after).
create function pgjobs.claim_floor(queues text[], job_types text[], priority int)
returns timestamptz
language plpgsql stable as $$
declare
    parts bigint[] := pgjobs.claim_hint_parts();
    clock timestamptz := clock_timestamp();
begin
    if priority between 0 and 3
       and pgjobs.claim_hint_holds(parts, pgjobs.claim_hint_fingerprint(queues, job_types),
                                   (select r.last_value from pgjobs.claim_rewinds r), clock) then
        return pgjobs.claim_hint_time(parts[5 + 2 * priority]);
    end if;
    return '-infinity';
end
$$;

-- Moves pgjobs.claim_rewinds (see pgjobs.claim). As the owner: every role that
-- may make a job runnable fires it, and none of them may move the sequence.
create function pgjobs.claim_rewind() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform nextval('pgjobs.claim_rewinds');
    return null;
end
$$;

-- A job that becomes runnable with a run_at well before now may sit below
-- the claims' hints. Twice: at once, for a claim later in the same
-- transaction, and again at commit, for the other sessions' claims (a claim
-- that walked whole between the two could not see it yet). Half of
-- pgjobs.claim_hint_lag(), written out: a trigger condition calling an SQL
-- function is parsed and planned again for every statement on the table.
create trigger jobs_claim_rewind
    after insert or update of state, run_at on pgjobs.jobs_active
    for each row
    when (new.state in ('queued', 'retrying')
          and new.run_at < clock_timestamp() - interval '0.5 seconds')
    execute function pgjobs.claim_rewind();
create constraint trigger jobs_claim_rewind_at_commit
    after insert or update of state, run_at on pgjobs.jobs_active
    deferrable initially deferred
    for each row
    when (new.state in ('queued', 'retrying')
          and new.run_at < clock_timestamp() - interval '0.5 seconds')
    execute function pgjobs.claim_rewind();

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

-- Ends successful attempts (the worker's job_complete_many): each job named by
-- id, still running under the given lease token, completes, or ends canceled
-- when a cancel was requested meanwhile; the rows it moved. The per-job values
-- are looked up by position, not joined: a join with the arrays was planned as
-- a loop over every running job for each element.
--
-- A function for its plan, as the claim: generic, no JIT, no sequential or
-- bitmap scan, so the one plan left is a probe of jobs_id_idx per job, which
-- reads a job's own row versions and no other's. Sent as a bare statement, its
-- generic plan, made while jobs_active was short, walked the rescuer's index
-- over every running row, filtering by id; and under a held xmin horizon, when
-- no dead version can go, each completion then stepped over every job claimed
-- since (3,030 index entries for 10 jobs after 3,000 done). The rescuer's
-- index now holds only rows with a lease (20_tables.sql), which this guard
-- does not imply, so no plan of it can take that walk.
create function pgjobs.complete_many(ids bigint[], tokens bigint[], results jsonb,
                                     durations double precision[], now timestamptz default null)
returns table (id bigint, state text)
language plpgsql
set enable_bitmapscan = off
set enable_seqscan = off
set plan_cache_mode = force_generic_plan
set jit = off
as $$
begin
    return query
    update pgjobs.jobs j
       set state = case when j.cancel_requested_at is null then 'completed' else 'canceled' end,
           result = nullif(complete_many.results -> (array_position(complete_many.ids, j.id) - 1),
                           'null'),
           finished_at = coalesce(complete_many.now, now()),
           last_duration_ms = complete_many.durations[array_position(complete_many.ids, j.id)],
           lease_expires_at = null
     where j.id = any(complete_many.ids) and j.state = 'running'
       and j.lease_token = complete_many.tokens[array_position(complete_many.ids, j.id)]
    returning j.id, j.state;
end
$$;
