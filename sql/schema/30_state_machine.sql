-- The state machine: which transitions exist, which states are finished, how a
-- failed attempt ends, and the one statement trigger every state change goes
-- through (history, NOTIFY, dependents, dedup keys), so no caller can forget
-- one of them.

-- The allowed transitions. jobs_after_update refuses any other, whoever
-- writes it; pgjobs.states.TRANSITIONS mirrors this list in Python.
create function pgjobs.transition_allowed(from_state text, to_state text)
returns boolean language sql immutable parallel safe as $$
    select (from_state, to_state) in (
        ('waiting',  'queued'),    -- last parent completed
        ('waiting',  'canceled'),  -- canceled, or a parent failed
        ('queued',   'running'),   -- claimed
        ('queued',   'canceled'),
        ('retrying', 'running'),   -- claimed again
        ('retrying', 'canceled'),
        ('running',  'completed'),
        ('running',  'retrying'),  -- transient failure, timeout, lost lease
        ('running',  'dead'),      -- attempts exhausted, permanent error
        ('running',  'canceled'),  -- canceled while running
        ('running',  'queued'),    -- returned unstarted (shutdown, lost sibling)
        ('dead',     'queued'),    -- pgjobs.retry
        ('canceled', 'queued')     -- pgjobs.retry
    )
$$;

-- A finished job has ended and nothing runs it again but pgjobs.retry: the
-- one definition of "finished". SQL and IMMUTABLE, so the planner inlines it
-- and a query filtering on it still matches jobs_finished_idx's predicate.
create function pgjobs.is_finished(state text)
returns boolean language sql immutable parallel safe as $$
    select state in ('completed', 'dead', 'canceled')
$$;

-- Where a failed attempt leaves its job: canceled when a cancel was requested,
-- dead when the error is permanent or the attempts are spent, else retrying.
-- The worker's failures (job_fail_many) and the lease rescue both decide here,
-- through failed_attempt below.
create function pgjobs.failure_state(cancel_requested boolean, permanent boolean,
                                     attempt int, max_attempts int)
returns text language sql immutable parallel safe as $$
    select case when cancel_requested then 'canceled'
                when permanent or attempt >= max_attempts then 'dead'
                else 'retrying' end
$$;

-- Delay before the next attempt: exponential backoff with full jitter.
create function pgjobs.retry_delay(attempt int, base_seconds double precision,
                                   cap_seconds double precision)
returns interval language sql volatile as $$
    select make_interval(secs => random() * least(cap_seconds,
                                                  base_seconds * power(2, greatest(attempt - 1, 0))))
$$;

-- What a failed attempt changes on its job: the state failure_state decides,
-- the time a retrying job runs again (after the backoff) and the time a
-- finished one finished. One SQL expression the planner inlines into the
-- statement calling it, field by field, so a row pays for no function call
-- and draws its backoff once: job_fail_many and lease_rescue call it as
-- SET (state, run_at, finished_at) = row((pgjobs.failed_attempt(...)).*).
create type pgjobs.failure_outcome as (state text, run_at timestamptz, finished_at timestamptz);

create function pgjobs.failed_attempt(cancel_requested boolean, permanent boolean, attempt int,
                                      max_attempts int, run_at timestamptz,
                                      retry_base_seconds double precision,
                                      retry_cap_seconds double precision, now timestamptz)
returns pgjobs.failure_outcome language sql volatile as $$
    select row(pgjobs.failure_state(cancel_requested, permanent, attempt, max_attempts),
               case when pgjobs.failure_state(cancel_requested, permanent, attempt,
                                              max_attempts) = 'retrying'
                    then now + pgjobs.retry_delay(attempt, retry_base_seconds, retry_cap_seconds)
                    else run_at end,
               case when pgjobs.is_finished(pgjobs.failure_state(cancel_requested, permanent,
                                                                 attempt, max_attempts))
                    then now end)::pgjobs.failure_outcome
$$;

-- A NOTIFY payload as JSON text: ids and numbers only. Built by concatenation,
-- at half the cost of json_build_object for the same JSON.
-- Postgres refuses a NOTIFY payload of 8,000 bytes or more, and the statement
-- with it. Whatever a row holds, this one is at most 1,200 + 1,200 bytes of
-- escaped text (200 characters of at most 6 bytes each) plus ids and numbers.
create function pgjobs.state_event(id bigint, organization text, job_type text,
                                   state text, attempt int)
returns text language sql stable parallel safe as $$  -- stable, as concat is: inlined
    select concat('{"id":', id, ',"organization":',
                  coalesce(to_json(left(organization, 200))::text, 'null'),
                  ',"job_type":', to_json(left(job_type, 200))::text,
                  ',"state":', to_json(left(state, 20))::text,
                  ',"attempt":', attempt, '}')
$$;

-- The pgjobs_progress payload, bounded the same way (progress is 0-100).
create function pgjobs.progress_event(id bigint, organization text, progress numeric,
                                      state text)
returns text language sql stable parallel safe as $$
    select concat('{"id":', id, ',"organization":',
                  coalesce(to_json(left(organization, 200))::text, 'null'),
                  ',"progress":', coalesce(round(progress, 6)::text, 'null'),
                  ',"state":', to_json(left(state, 20))::text, '}')
$$;

-- After any UPDATE statement of jobs: the state machine, history, NOTIFY (or
-- the relay's outbox), dependents and dedup keys, set-based.
--
-- Every UPDATE of jobs runs it, from any session (a worker's, an operator's
-- cancel or retry). No JIT: past a few million rows the planner's cost
-- estimates for its short statements cross jit_above_cost, and compiling them
-- took two fifths of the workers' database time. No sequential scan: its plans
-- are cached for the session, and one made while the table was short could be
-- a sequential scan that then reads the whole table on every completion; it
-- only ever looks rows up by id or through jobs_waiting_parents_idx.
create function pgjobs.jobs_after_update() returns trigger
language plpgsql
-- The owner's rights (90_security.sql): it writes history, dedup flags, the
-- dependency cascade and the relay's outbox for sessions that may write none
-- of them (an admin's UPDATE of run_at runs it too).
security definer
set search_path = pg_catalog, pg_temp
set jit = off
set enable_seqscan = off
as $$
declare
    completed_ids bigint[];
    failed_ids    bigint[];
    woken_queues  text[];
    dedup_changed boolean;
    refused       text[];
    children      bigint[];
    q             text;
    -- The worker's sessions leave their state events to the relay
    -- (pgjobs.state_relay): a transaction that sends a NOTIFY commits only
    -- while it holds a lock every such commit of the server takes in turn,
    -- and with a notifying claim and completion per batch in every worker
    -- process they queued behind each other past a few processes per core.
    relay_events  text[];
    relayed       boolean := coalesce(current_setting('pgjobs.relay_state_events', true), '') = 'on';
begin
    -- Only the columns the history and the events need: never the payload.
    --
    -- A full join, which Postgres runs only as a hash or merge join, never
    -- as a nested loop; the filter is not strict (is distinct from), so the
    -- planner keeps it full. An UPDATE's old and new rows hold the same ids,
    -- so it pairs exactly what an inner join would. The planner sizes the
    -- transition tables by the first statement of the session that fired
    -- this trigger, and a worker's first claim takes one job: its plan was a
    -- nested loop that, for a claim or completion of 100 jobs, read the old
    -- rows 100 times over (9,900 rows filtered out, a quarter of the
    -- server's CPU per job in a drain).
    with changed as (
        select n.id, n.organization, n.job_type, n.queue, n.attempt, n.state, n.dedup_key,
               n.last_error_class, n.last_error, n.last_traceback, n.last_duration_ms,
               n.started_at, coalesce(n.worker, o.worker) as worker, o.state as from_state
          from new_rows n full join old_rows o on o.id = n.id
         where n.state is distinct from o.state
    ), history as (
        insert into pgjobs.job_events
               (job_id, organization, job_type, attempt, from_state, to_state,
                worker, error_class, message, traceback, duration_ms)
        select c.id, c.organization, c.job_type, c.attempt, c.from_state, c.state, c.worker,
               case when c.from_state = 'running' and c.state <> 'completed' then c.last_error_class end,
               case when c.state in ('retrying', 'dead', 'canceled') then c.last_error end,
               case when c.from_state = 'running' and c.state <> 'completed' then c.last_traceback end,
               case when c.from_state = 'running' then
                    coalesce(c.last_duration_ms,
                             extract(epoch from now() - c.started_at) * 1000) end
          from changed c
    ), notified as (
        select c.*,
               case when not relayed then
                    pg_notify('pgjobs_state', pgjobs.state_event(c.id, c.organization, c.job_type,
                                                                 c.state, c.attempt)) end as sent
          from changed c
    )
    select array_agg(id) filter (where state = 'completed'),
           array_agg(id) filter (where state in ('dead', 'canceled')),
           array_agg(distinct queue) filter (where state in ('queued', 'retrying')),
           bool_or(dedup_key is not null
                   and (pgjobs.is_finished(state) or pgjobs.is_finished(from_state))),
           min(array[id::text, from_state, state])
               filter (where not pgjobs.transition_allowed(from_state, state)),
           array_agg(pgjobs.state_event(id, organization, job_type, state, attempt) order by id)
               filter (where relayed)
      into completed_ids, failed_ids, woken_queues, dedup_changed, refused, relay_events
      from notified;

    -- A forbidden transition undoes the whole statement (its history and
    -- NOTIFYs with it).
    if refused is not null then
        raise exception 'pgjobs: job % cannot go from % to %', refused[1], refused[2], refused[3]
            using errcode = 'PJ003';
    end if;

    -- One outbox row per statement, its events in the NOTIFY payloads' form.
    -- Its own statement, reached only by relayed sessions: only they may
    -- write the outbox.
    if relay_events is not null then
        insert into pgjobs.state_outbox (events) values (relay_events);
    end if;

    if woken_queues is not null then
        foreach q in array woken_queues loop
            perform pg_notify('pgjobs_wakeup', q);
        end loop;
    end if;

    -- A dedup key stays taken while its job is unfinished.
    if dedup_changed then
        update pgjobs.dedup_keys d
           set active = not pgjobs.is_finished(n.state)
          from new_rows n
         where n.dedup_key is not null
           and d.organization = coalesce(n.organization, '')
           and d.job_type = n.job_type and d.dedup_key = n.dedup_key
           and d.job_id = n.id
           and d.active = pgjobs.is_finished(n.state);  -- the flag is out of date
    end if;

    if completed_ids is not null then
        -- Lock the waiting children first, in id order. Two parents of one
        -- child completing in concurrent transactions would otherwise each
        -- see the other still running and leave the child waiting for ever:
        -- the second completion waits here until the first commits, and the
        -- release below, a later statement with a fresh snapshot, then sees
        -- both parents completed. Id order keeps two batches from deadlocking.
        select array_agg(w.id) into children
          from (select c.id from pgjobs.jobs c
                 where c.state = 'waiting' and c.depends_on && completed_ids
                 order by c.id
                   for update) w;
        if children is not null then
            -- A waiting child runs once its last parent has completed.
            update pgjobs.jobs c
               set state = 'queued', run_at = greatest(c.run_at, now())
             where c.id = any(children)
               and c.state = 'waiting'
               and not exists (select 1 from pgjobs.jobs p
                                where p.id = any(c.depends_on) and p.state <> 'completed');
        end if;
    end if;

    if failed_ids is not null then
        -- A parent that ended without completing (dead or canceled) cancels
        -- its waiting children; their own update re-enters this trigger, which
        -- reaches the grandchildren.
        update pgjobs.jobs c
           set state = 'canceled', canceled_by = 'dependency', finished_at = now(),
               lease_token = coalesce(c.lease_token, 0),  -- jobs_finished_token_check
               last_error = (select format('dependency %s ended %s', p.id, p.state)
                               from pgjobs.jobs p
                              where p.id = any(c.depends_on) and p.id = any(failed_ids)
                              order by p.id limit 1)
         where c.state = 'waiting' and c.depends_on && failed_ids;
    end if;
    return null;
end
$$;

create trigger jobs_after_update
    after update on pgjobs.jobs
    referencing old table as old_rows new table as new_rows
    for each statement execute function pgjobs.jobs_after_update();

-- The relay: sends the state events the worker's sessions left in
-- pgjobs.state_outbox, from one session at a time, as the NOTIFYs those
-- sessions would have sent (one per state change, the same payload), all in
-- one commit. A worker supervisor calls it every few milliseconds with the
-- lowest outbox id it may not have seen yet (rows commit out of id order, so
-- it keeps the ids it skipped and asks again from the lowest); rows are
-- deleted as they are sent, so whatever is still there was never sent, and a
-- relay that starts afresh (after = 0) sends what a stopped one left. Returns
-- the ids of the rows sent; none when another session is relaying.
--
-- Rows are found and deleted through the primary key alone (no sequential or
-- bitmap scan, a generic plan): the outbox is short, so a plan of its own
-- choosing read it whole, and under a held xmin horizon, when no deleted row
-- can go, every pass then read every row sent since (72 pages a pass after
-- 300 completions; one row per claim and per completion statement).
create function pgjobs.state_relay(after bigint, n int) returns setof bigint
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
    ids bigint[];
begin
    if not pg_try_advisory_xact_lock(hashtext('pgjobs.state_relay')) then
        return;
    end if;
    ids := array(select b.id from pgjobs.state_outbox b where b.id > after order by b.id limit n);
    if cardinality(ids) = 0 then
        return;
    end if;
    return query
    with sent as (
        delete from pgjobs.state_outbox o
         where o.id = any(ids)
        returning o.id, o.events
    ), notified as (
        select s.id, count(pg_notify('pgjobs_state', e.payload)) as events
          from (select s.id, s.events from sent s order by s.id) s
         cross join lateral unnest(s.events) with ordinality as e(payload, ord)
         group by s.id
    )
    select id from notified order by id;
end
$$;
