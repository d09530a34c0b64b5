-- State events leave the worker's commits (issue 19, deliverable 2).
--
-- Every claim and every completion used to send its pgjobs_state NOTIFYs from
-- its own transaction. PostgreSQL commits notifying transactions one at a
-- time (PreCommit_Notify takes a lock on the database's notification queue
-- and holds it through the commit), so with a notifying claim and completion
-- per batch in every worker process, processes queued on that lock (wait
-- event Lock:object) and completions per second fell as processes were
-- added: 2,436/s at 4 processes, 1,210/s at 16, 521/s at 64 on a 2-core
-- machine with 1 ms jobs.
--
-- Now a session that sets pgjobs.relay_state_events = on (the worker's do)
-- writes its statement's events as one row of pgjobs.state_outbox instead,
-- and pgjobs.state_relay, called by one supervisor at a time, sends them as
-- the same NOTIFYs (one per state change, the same payload) in one commit.
-- Every other session (an application's cancel or retry, pgjobs.testing)
-- notifies directly as before.

create unlogged table pgjobs.state_outbox (
    id     bigint generated always as identity primary key,
    events text[] not null
);

do $$
begin
    if pg_has_role('pgjobs_owner', 'MEMBER') then
        alter table pgjobs.state_outbox owner to pgjobs_owner;
    end if;
end
$$;
revoke all on pgjobs.state_outbox from public;
grant select, insert, delete on pgjobs.state_outbox to pgjobs_worker;
grant usage on sequence pgjobs.state_outbox_id_seq to pgjobs_worker;

create or replace function pgjobs.jobs_after_update() returns trigger
language plpgsql
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
    with changed as (
        select n.id, n.organization, n.job_type, n.queue, n.attempt, n.state, n.dedup_key,
               n.last_error_class, n.last_error, n.last_traceback, n.last_duration_ms,
               n.started_at, coalesce(n.worker, o.worker) as worker, o.state as from_state
          from new_rows n join old_rows o on o.id = n.id
         where n.state <> o.state
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
               last_error = (select format('dependency %s ended %s', p.id, p.state)
                               from pgjobs.jobs p
                              where p.id = any(c.depends_on) and p.id = any(failed_ids)
                              order by p.id limit 1)
         where c.state = 'waiting' and c.depends_on && failed_ids;
    end if;
    return null;
end
$$;

-- The relay: sends the state events the worker's sessions left in
-- pgjobs.state_outbox, from one session at a time, as the NOTIFYs those
-- sessions would have sent (one per state change, the same payload), all in
-- one commit. A worker supervisor calls it every few milliseconds with the
-- lowest outbox id it may not have seen yet (rows commit out of id order, so
-- it keeps the ids it skipped and asks again from the lowest); rows are
-- deleted as they are sent, so whatever is still there was never sent, and a
-- relay that starts afresh (after = 0) sends what a stopped one left. Returns
-- the ids of the rows sent; none when another session is relaying.
create function pgjobs.state_relay(after bigint, n int) returns setof bigint
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
as $$
begin
    if not pg_try_advisory_xact_lock(hashtext('pgjobs.state_relay')) then
        return;
    end if;
    return query
    with sent as (
        delete from pgjobs.state_outbox o
         where o.id in (select b.id from pgjobs.state_outbox b
                         where b.id > after order by b.id limit n)
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

revoke execute on function pgjobs.state_relay(bigint, int) from public;
grant execute on function pgjobs.state_relay(bigint, int) to pgjobs_worker;
