-- The statement trigger of jobs' updates pairs its old and new rows by a full
-- join, which Postgres runs as a hash or merge join only: the plan it kept
-- for the session was a nested loop whenever the session's first update of
-- jobs moved one row (a worker's first claim), and each claim or completion
-- of n jobs then read the old rows n times over. The rest of
-- pgjobs.jobs_after_update is unchanged (30_state_machine.sql).

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
create or replace function pgjobs.jobs_after_update() returns trigger
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
