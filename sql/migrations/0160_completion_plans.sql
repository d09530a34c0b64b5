-- Completions under a held xmin horizon (issue 19): a completion's plan never
-- walks other jobs' rows. Its generic plan, made while jobs_active was short,
-- walked the rescuer's index over every running row filtering by id; while an
-- old snapshot keeps dead versions, each completion stepped over every job
-- claimed since. The completion becomes a function with its own plan settings
-- (as the claim), and the rescuer's index holds only rows with a lease, which
-- no statement naming jobs by id implies (20_tables.sql, 50_claim.sql). The
-- state relay reads and deletes the outbox through its primary key only
-- (30_state_machine.sql).

drop index pgjobs.jobs_running_lease_idx;
create index jobs_running_lease_idx on pgjobs.jobs_active (lease_expires_at)
    where state = 'running' and lease_expires_at is not null;

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

-- The workers' alone, as 90_security.sql gives it.
revoke execute on function pgjobs.complete_many(bigint[], bigint[], jsonb, double precision[],
                                                timestamptz)
    from public;
grant execute on function pgjobs.complete_many(bigint[], bigint[], jsonb, double precision[],
                                               timestamptz)
    to pgjobs_worker;

-- The state relay (30_state_machine.sql): sends the state events of the
-- worker's sessions.
-- Rows are found and deleted through the primary key alone (no sequential or
-- bitmap scan, a generic plan): the outbox is short, so a plan of its own
-- choosing read it whole, and under a held xmin horizon, when no deleted row
-- can go, every pass then read every row sent since (72 pages a pass after
-- 300 completions; one row per claim and per completion statement).
create or replace function pgjobs.state_relay(after bigint, n int) returns setof bigint
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
