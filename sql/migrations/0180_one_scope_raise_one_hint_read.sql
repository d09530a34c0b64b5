-- Two pieces written twice become one each (no change of behaviour):
-- * the PJ004 raise of an unscoped write, in the insert trigger of jobs and
--   the write trigger of schedules: pgjobs.no_organization;
-- * the reading of a session's claim hint (its parse, and whether it holds),
--   in pgjobs.claim and pgjobs.claim_floor: pgjobs.claim_hint_fingerprint,
--   claim_hint_parts and claim_hint_holds, SQL functions the planner inlines.

-- "No organization set", its own SQLSTATE, PJ004: a caller's setup bug (scope
-- the transaction, see pgjobs.tenant), told apart from a refusal (42501) by
-- programs in any language. Raised by every write that needs a scope and has
-- none: a job's (jobs_before_insert) and a schedule's (schedules_before_write).
create function pgjobs.no_organization() returns void
language plpgsql as $$
begin
    raise exception 'pgjobs: this session is scoped to no organization'
        using errcode = 'PJ004',
              hint = 'set it in the same transaction: select set_config('
                     '''pgjobs.organization'', <organization>, true), or pgjobs.tenant() '
                     'in Python';
end
$$;

-- Every new row of jobs comes through here, whoever inserts it
-- (pgjobs.enqueue, enqueue_jobs or a plain INSERT), in named steps: the input
-- limits, the session's scope, the job type, the organization, the type's
-- defaults, validation, dependencies, the id, dedup and the wake-up. The
-- steps are blocks of one function, not functions or triggers of their own,
-- so a row pays for no extra call, and a statement prepares no trigger
-- condition but this trigger's short one (0110: Postgres reads and plans
-- every WHEN clause of a table's triggers again for each INSERT statement,
-- which cost a one-row enqueue more than the row itself).
-- The owner's rights (90_security.sql): it takes dedup keys and locks parents
-- FOR SHARE for sessions that may do neither themselves.
create or replace function pgjobs.jobs_before_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    t     pgjobs.job_types;
    scope text := pgjobs.current_organization();
    given bigint := new.id;  -- enqueue_jobs puts the input's position here
begin
    -- First, so a row over a limit is refused whatever else is wrong with it,
    -- and no dedup key is taken nor wake-up sent for it.
    <<input_limits>>
    begin
        if pgjobs.input_refused(coalesce(new.organization, scope), new.queue, new.dedup_key,
                                new.priority, new.max_attempts, new.timeout_seconds,
                                new.run_at, new.depends_on, new.payload) then
            perform pgjobs.invalid_job(coalesce(
                pgjobs.job_problem(new),
                pgjobs.payload_problem(new.payload),
                -- Left NULL, the organization is the session's scope.
                'organization must be 1-200 characters without control characters'));
        end if;
    end input_limits;

    -- No scope is PJ004 (pgjobs.no_organization), before anything else is
    -- looked at. Workers and admins, who may enqueue system jobs and any
    -- organization's jobs without a scope, pass.
    <<session_scope>>
    begin
        if scope is null and not pgjobs.sees_all() then
            perform pgjobs.no_organization();
        end if;
    end session_scope;

    <<job_type>>
    begin
        select * into t from pgjobs.job_types where name = new.job_type;
        if not found then
            perform pgjobs.invalid_job(format('unknown job type %L', new.job_type));
        end if;
        if not t.enabled then
            perform pgjobs.invalid_job(format('job type %L is disabled', new.job_type));
        end if;
        if new.state is distinct from 'queued' then
            perform pgjobs.invalid_job(format('a new job starts queued, not %L', new.state));
        end if;
    end job_type;

    -- A scoped session writes its own organization's jobs only. Checked before
    -- any dedup key or dependency is read, so naming another organization
    -- fails the same way whatever that organization holds.
    <<scope>>
    begin
        new.organization := coalesce(new.organization, scope);
        if new.organization is distinct from scope or new.organization is null then
            if not pgjobs.sees_all() then
                raise exception '%', case when scope is null
                    then 'pgjobs: this session is scoped to no organization (see pgjobs.tenant)'
                    else format('pgjobs: organization %L is outside this session''s scope',
                                new.organization) end
                    using errcode = 'insufficient_privilege';
            end if;
        end if;
    end scope;

    <<type_defaults>>
    begin
        new.queue           := coalesce(new.queue, t.queue);
        new.priority        := coalesce(new.priority, t.priority);
        new.max_attempts    := coalesce(new.max_attempts, t.max_attempts);
        new.timeout_seconds := coalesce(new.timeout_seconds, t.timeout_seconds);
        new.payload         := coalesce(new.payload, '{}');
        new.run_at          := coalesce(new.run_at, now());
        new.created_at      := now();
        new.attempt         := 0;
    end type_defaults;

    <<validation>>
    begin
        if new.priority not between 0 and 3 then
            perform pgjobs.invalid_job(format('priority must be 0-3, got %s', new.priority));
        end if;
        if new.max_attempts < 1 then
            perform pgjobs.invalid_job(format('max_attempts must be at least 1, got %s', new.max_attempts));
        end if;
        if new.timeout_seconds < 0 then
            perform pgjobs.invalid_job(format('timeout_seconds must be >= 0, got %s', new.timeout_seconds));
        end if;
        if new.organization = '' then
            perform pgjobs.invalid_job('organization must not be empty (NULL is a system job)');
        end if;
        if new.queue = '' then
            perform pgjobs.invalid_job('queue must not be empty');
        end if;
        if jsonb_typeof(new.payload) <> 'object' then
            perform pgjobs.invalid_job(format('payload must be a JSON object, got %s',
                                              jsonb_typeof(new.payload)));
        end if;
        if pg_column_size(new.payload) > pgjobs.max_payload_bytes() then
            perform pgjobs.invalid_job(format('payload is %s bytes, the limit is %s',
                                              pg_column_size(new.payload), pgjobs.max_payload_bytes()));
        end if;
    end validation;

    -- Parents must exist in the same organization. FOR SHARE holds them still
    -- until we commit, so a parent cannot finish unseen in between. The job
    -- waits for parents not completed yet, and starts canceled if one ended
    -- without completing.
    <<dependencies>>
    declare
        n_given      int;
        n_found      int;
        n_done       int;
        failed       bigint;
        failed_state text;
    begin
        if new.depends_on is not null and cardinality(new.depends_on) > 0 then
            select array_agg(distinct d order by d) into new.depends_on
              from unnest(new.depends_on) d;
            n_given := cardinality(new.depends_on);
            select count(*), count(*) filter (where p.state = 'completed'),
                   min(p.id) filter (where p.state in ('dead', 'canceled'))
              into n_found, n_done, failed
              from (select j.id, j.state from pgjobs.jobs j
                     where j.id = any(new.depends_on)
                       and j.organization is not distinct from new.organization
                       for share) p;
            if n_found < n_given then
                perform pgjobs.invalid_job('depends_on names a job that does not exist');
            end if;
            if failed is not null then
                -- Born canceled: jobs_after_insert_canceled ends it (70_retention.sql).
                select state into failed_state from pgjobs.jobs where id = failed;
                new.state       := 'waiting';
                new.canceled_by := 'dependency';
                new.last_error  := format('dependency %s ended %s', failed, failed_state);
            elsif n_done < n_given then
                new.state := 'waiting';
            end if;
        else
            new.depends_on := null;
        end if;
    end dependencies;

    -- Always drawn here: whatever id the caller gave is not kept, so no tenant
    -- can pick, collide with or probe for one.
    <<id>>
    begin
        new.id := nextval('pgjobs.jobs_id_seq');
    end id;

    -- A live job holding the same key makes this row a duplicate: nothing is
    -- written, and enqueue_jobs learns which of its inputs it was.
    <<dedup>>
    begin
        if new.dedup_key is null and t.dedup_by_payload then
            new.dedup_key := pgjobs.payload_key(new.payload);
        end if;
        if new.dedup_key is not null then
            insert into pgjobs.dedup_keys as d
                   (organization, job_type, dedup_key, job_id, active, expires_at)
            values (coalesce(new.organization, ''), new.job_type, new.dedup_key, new.id,
                    not pgjobs.is_finished(new.state),
                    now() + make_interval(secs => t.dedup_window_seconds))
            on conflict (organization, job_type, dedup_key) do update
                   set job_id = excluded.job_id, active = excluded.active,
                       expires_at = excluded.expires_at
                 where not d.active and d.expires_at <= now();
            if not found then
                perform pgjobs.skipped_input_note(given);
                return null;
            end if;
        end if;
    end dedup;

    -- Wake the queue's workers. Postgres sends one notification per distinct
    -- payload per transaction, so a bulk insert still wakes each queue once.
    <<wake_up>>
    begin
        if new.state = 'queued' then
            perform pg_notify('pgjobs_wakeup', new.queue);
        end if;
    end wake_up;
    -- Checked: the row is stored as enqueue_plain stores its own, and a
    -- later insert of it (a row moved between partitions) skips this trigger.
    new.prechecked := true;
    return new;
end
$$;

create or replace function pgjobs.schedules_before_write() returns trigger
language plpgsql as $$
declare
    scope text := pgjobs.current_organization();
    t     pgjobs.job_types;
begin
    if tg_op = 'INSERT' then
        new.organization := coalesce(new.organization, scope);
    end if;
    -- As for jobs (0011_client_contract.sql): no scope is PJ004
    -- (pgjobs.no_organization), another organization is insufficient_privilege.
    if scope is null and not pgjobs.sees_all() then
        perform pgjobs.no_organization();
    end if;
    if (new.organization is distinct from scope or new.organization is null)
       and not pgjobs.sees_all() then
        raise exception 'pgjobs: organization % is outside this session''s scope',
            coalesce(quote_literal(new.organization), 'NULL (system)')
            using errcode = 'insufficient_privilege';
    end if;
    if new.name is null or new.name = '' or length(new.name) > 200 then
        perform pgjobs.invalid_job('a schedule name is 1-200 characters');
    end if;
    if new.organization = '' then
        perform pgjobs.invalid_job('organization must not be empty (NULL is a system schedule)');
    end if;
    select * into t from pgjobs.job_types where name = new.job_type;
    if not found then
        perform pgjobs.invalid_job(format('unknown job type %L', new.job_type));
    end if;
    new.payload := coalesce(new.payload, '{}');
    if jsonb_typeof(new.payload) <> 'object' then
        perform pgjobs.invalid_job(format('payload must be a JSON object, got %s',
                                          jsonb_typeof(new.payload)));
    end if;
    if pg_column_size(new.payload) > pgjobs.max_payload_bytes() then
        perform pgjobs.invalid_job(format('payload is %s bytes, the limit is %s',
                                          pg_column_size(new.payload), pgjobs.max_payload_bytes()));
    end if;
    new.timezone := coalesce(new.timezone, 'UTC');
    if tg_op = 'INSERT' or new.cron is distinct from old.cron
       or new.timezone is distinct from old.timezone then
        perform pgjobs.check_timezone(new.timezone);
        -- A new rule starts after now, and never at or before a tick already fired.
        new.next_fire_at := pgjobs.cron_next(new.cron, new.timezone,
                                             greatest(now(), new.last_fired_at));
        if new.next_fire_at is null then
            perform pgjobs.invalid_job(format('cron expression %L never fires', new.cron));
        end if;
    end if;
    if tg_op = 'UPDATE' then
        new.created_at := old.created_at;
    end if;
    new.updated_at := now();
    return new;
end
$$;

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
create or replace function pgjobs.claim(worker text, queues text[], n int,
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
create or replace function pgjobs.claim_floor(queues text[], job_types text[], priority int)
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
