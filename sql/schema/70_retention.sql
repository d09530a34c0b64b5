-- Retention: finished jobs are deleted in batches by the pruner (the runtime
-- statement job_prune_batch, through jobs_finished_idx).

-- Deleting a job releases its dedup key row too.
create function pgjobs.jobs_after_delete() returns trigger
language plpgsql
security definer  -- the owner's rights: no runtime role writes dedup keys
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from pgjobs.dedup_keys d
     using old_rows o
     where o.dedup_key is not null
       and d.organization = coalesce(o.organization, '')
       and d.job_type = o.job_type and d.dedup_key = o.dedup_key and d.job_id = o.id;
    return null;
end
$$;

create trigger jobs_after_delete
    after delete on pgjobs.jobs
    referencing old table as old_rows
    for each statement execute function pgjobs.jobs_after_delete();

-- Partitions of finished jobs (0060). jobs_finished holds one partition per
-- period of finished_at (pgjobs.partition_settings): the workers make them a
-- few periods ahead (partitions_ensure, from their maintenance turn) and
-- retention drops whole ones past the cut-off (partition_drop_oldest). Both
-- run as the owner, so no runtime role needs rights to make or drop tables.

-- The period holding t: its partition's name and bounds. Periods are counted
-- from a Monday at midnight UTC, so a week or a day starts where one expects
-- whatever the session's time zone, and names say the start in UTC.
create function pgjobs.finished_partition(t timestamptz, period interval,
                                          out name text, out lo timestamptz, out hi timestamptz)
language sql stable as $$
    select 'jobs_finished_' || to_char(b at time zone 'UTC', 'YYYYMMDD"_"HH24MI'), b, b + period
      from (select date_bin(period, t, timestamptz '2000-01-03 00:00:00+00') as b) x
$$;

-- The same period's partition of history (pgjobs.job_events, by `at`).
create function pgjobs.events_partition(t timestamptz, period interval,
                                        out name text, out lo timestamptz, out hi timestamptz)
language sql stable as $$
    select 'job_events_' || substr(f.name, length('jobs_finished_') + 1), f.lo, f.hi
      from pgjobs.finished_partition(t, period) f
$$;

-- Makes the partitions of the current period and of the next periods_ahead
-- ones that do not exist yet, of finished jobs and of history; returns how
-- many it made. Each is made by the owner with row-level security enabled,
-- forced and no policy and no grants: nobody reads a partition but through
-- pgjobs.jobs or pgjobs.job_events, whose policies apply.
-- A partition it cannot make now is left for the next call: made meanwhile by
-- another worker, overlapping one of an earlier period setting, rows of the
-- default partition in its range, or a lock it would wait for (a short lock
-- timeout: making a partition locks its parent, which every completion
-- writes, and a completion must not queue behind a DDL that queues behind a
-- long reader). Once it has made a partition of finished jobs it holds
-- jobs_finished until it commits, so it then waits for no lock on
-- job_events: a transaction holding job_events and waiting for
-- jobs_finished (a prune batch, a reader of history then jobs) would wait
-- for it in turn, a deadlock. Those partitions of history are made by the
-- next call.
create function pgjobs.partitions_ensure(now timestamptz default null) returns int
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '200ms'
as $$
declare
    s    pgjobs.partition_settings;
    p    record;
    made int := 0;
    holds_finished boolean := false;
begin
    select * into s from pgjobs.partition_settings;
    for p in
        select f.name, f.lo, f.hi, 'jobs_finished' as parent
          from generate_series(0, s.periods_ahead) k
         cross join lateral pgjobs.finished_partition(
                   coalesce(partitions_ensure.now, pg_catalog.now()) + s.period * k, s.period) f
        union all
        select e.name, e.lo, e.hi, 'job_events'
          from generate_series(0, s.periods_ahead) k
         cross join lateral pgjobs.events_partition(
                   coalesce(partitions_ensure.now, pg_catalog.now()) + s.period * k, s.period) e
    loop
        continue when to_regclass(format('pgjobs.%I', p.name)) is not null;
        begin
            if holds_finished and p.parent = 'job_events' then
                lock table pgjobs.job_events in access exclusive mode nowait;
            end if;
            execute format('create table pgjobs.%I partition of pgjobs.%I '
                           'for values from (%L) to (%L)', p.name, p.parent, p.lo, p.hi);
            execute format('alter table pgjobs.%I enable row level security, '
                           'force row level security', p.name);
            made := made + 1;
            holds_finished := holds_finished or p.parent = 'jobs_finished';
        exception when duplicate_table or invalid_object_definition or check_violation
                       or lock_not_available then
            null;
        end;
    end loop;
    return made;
end
$$;

-- Retention in constant time: drops the oldest partition of finished jobs
-- whose whole period ended before cutoff, with its jobs' dedup keys, and the
-- partitions of history whose whole period ended with it, in one transaction
-- (a process killed meanwhile leaves all whole, for the next call). Returns
-- how many jobs it held; NULL when no partition of jobs is that old. The rows
-- of the partition straddling the cut-off, and of the default one, are the
-- row-by-row pruner's (job_prune_batch), with their history.
--
-- A partition of history holds the events of every job that changed state
-- in its period: of the jobs just dropped, but also of jobs kept (enqueued
-- in it and finished after the cut-off, or not finished at all). Those are
-- found from the jobs' side, in time independent of the partition's size:
-- every event of a kept job has a job id at most the partition's largest
-- (an index probe), and kept jobs with ids that old are few (the jobs
-- running across the period's end, and long-lived ones). Their events move
-- to the default partition with their ids (so their order) before the
-- partition is dropped; there they stay until their job goes. The events of
-- the jobs dropped are in the partitions dropped with them: a job's events
-- are written at or before its finished_at (its transaction's now()).
--
-- Locks go in the order of a completion's (jobs_finished, then job_events),
-- and job_events is asked for at once after jobs_finished with a short
-- timeout: a reader holding job_events and waiting for jobs_finished (a
-- history read, then a job's) would otherwise wait for this function while it
-- waits for the reader, and the reader's deadlock check (after a second)
-- would fail the reader.
create function pgjobs.partition_drop_oldest(cutoff timestamptz) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '1s'
as $$
declare
    part    regclass;
    lo      timestamptz;
    hi      timestamptz;
    n       bigint;
    upto    timestamptz;
    rels    regclass[];
    periods text[];
    ev      record;
    last    bigint;
    kept    bigint[];
    moved   pgjobs.job_events[];
begin
    -- Retention by partition is every organization's: a session scoped to one
    -- drops nothing (the row-by-row pruner deletes its own organization's).
    if not pgjobs.sees_all() then
        return null;
    end if;
    select c.oid::regclass, b[1]::timestamptz, b[2]::timestamptz into part, lo, hi
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
     cross join lateral regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                     '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$') b
     where i.inhparent = 'pgjobs.jobs_finished'::regclass
       and b[2]::timestamptz <= cutoff
     order by b[1]::timestamptz
     limit 1;
    if part is not null then
        -- Holds its rows still (a retry would move one out after its dedup key
        -- went); readers through pgjobs.jobs go on.
        execute format('lock table %s in share mode', part);
        select count(*) into n from pgjobs.jobs j
         where j.state in ('completed', 'dead', 'canceled') and j.finished_at >= lo
           and j.finished_at < hi;
        delete from pgjobs.dedup_keys d using pgjobs.jobs j
         where j.state in ('completed', 'dead', 'canceled') and j.finished_at >= lo
           and j.finished_at < hi and j.dedup_key is not null
           and d.organization = coalesce(j.organization, '') and d.job_type = j.job_type
           and d.dedup_key = j.dedup_key and d.job_id = j.id;
        execute format('drop table %s', part);
        upto := hi;
    else
        -- No jobs to drop: history of periods before the oldest partition of
        -- finished jobs still goes (its jobs went row by row, or never had one).
        -- A period's start, as the bounds of the partitions of history.
        select least((select f.lo from pgjobs.partition_settings x
                       cross join lateral pgjobs.finished_partition(cutoff, x.period) f),
                     min(b[1]::timestamptz)) into upto
          from pg_inherits i
          join pg_class c on c.oid = i.inhrelid
         cross join lateral regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                         '^FOR VALUES FROM \(''([^'']+)''\) TO') b
         where i.inhparent = 'pgjobs.jobs_finished'::regclass;
    end if;

    -- The partitions of history whose whole period ended by then (the one of
    -- history from before 0090 too, from MINVALUE), oldest first. Each is read
    -- through pgjobs.job_events (row-level security is forced on it with no
    -- policy: even its owner reads it only so), its bounds as constants, so
    -- the plan touches it alone.
    select coalesce(array_agg(c.oid::regclass order by b[2]::timestamptz), '{}'),
           coalesce(array_agg(format('e.at < %L', b[2]::timestamptz)
                              || case when b[1] is not null
                                      then format(' and e.at >= %L', b[1]::timestamptz)
                                      else '' end
                              order by b[2]::timestamptz), '{}')
      into rels, periods
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
     cross join lateral regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                     '^FOR VALUES FROM \((?:''([^'']+)''|MINVALUE)\) TO \(''([^'']+)''\)$') b
     where i.inhparent = 'pgjobs.job_events'::regclass
       and b[2]::timestamptz <= upto;
    if cardinality(rels) > 0 then
        perform set_config('lock_timeout', '200ms', true);
        lock table pgjobs.job_events in access exclusive mode;
    end if;
    for ev in select * from unnest(rels, periods) as x(rel, period)
    loop
        -- Its largest job id (the last entry of its job_events_job_idx), then
        -- the jobs kept with ids no larger (jobs_id_idx): theirs are the only
        -- events it may hold that stay.
        execute format('select max(e.job_id) from pgjobs.job_events e where %s', ev.period)
           into last;
        kept := array(select j.id from pgjobs.jobs j where j.id <= last);
        moved := '{}';
        if cardinality(kept) > 0 then
            execute format('select array(select e from pgjobs.job_events e'
                           ' where %s and e.job_id = any($1) order by e.id)', ev.period)
               into moved using kept;
        end if;
        execute format('drop table %s', ev.rel);
        -- No partition holds their period any more: they go to the default one.
        insert into pgjobs.job_events overriding system value
        select * from unnest(moved);
    end loop;

    -- Events moved to the default partition earlier, whose jobs went since:
    -- older than every partition of history left (none, while the one from
    -- before 0090 stands), a range the default partition alone holds, so the
    -- plan reads it alone.
    select least(upto, min(coalesce(b[1]::timestamptz, '-infinity'))) into upto
      from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
     cross join lateral regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                     '^FOR VALUES FROM \((?:''([^'']+)''|MINVALUE)\) TO') b
     where i.inhparent = 'pgjobs.job_events'::regclass;
    if upto > '-infinity' then
        execute format('delete from pgjobs.job_events e where e.at < %L'
                       '   and not exists (select from pgjobs.jobs j where j.id = e.job_id)', upto);
    end if;
    return n;
end
$$;

-- A job whose parent had already failed when it was enqueued is born
-- canceled. The insert trigger cannot write it so: a row's partition is chosen
-- before BEFORE triggers run, and one may not move it. It enqueues the job
-- waiting, marked canceled_by 'dependency', and this trigger ends it at the
-- end of the statement (history and state event: waiting -> canceled).
create function pgjobs.jobs_after_insert_canceled() returns trigger
language plpgsql
security definer  -- the owner's rights: the app may not UPDATE jobs itself
set search_path = pg_catalog, pg_temp
as $$
begin
    update pgjobs.jobs j set state = 'canceled', finished_at = now(), lease_token = 0
     where j.id = new.id and j.state = 'waiting';
    return null;
end
$$;

create trigger jobs_after_insert_canceled
    after insert on pgjobs.jobs
    for each row
    when (new.state = 'waiting' and new.canceled_by = 'dependency')
    execute function pgjobs.jobs_after_insert_canceled();
