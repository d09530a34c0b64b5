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

-- Makes the partitions of the current period and of the next periods_ahead
-- ones that do not exist yet; returns how many it made. Each is made by the
-- owner with row-level security enabled, forced and no policy and no grants:
-- nobody reads a partition but through pgjobs.jobs, whose policy applies.
-- A partition it cannot make now is left for the next call: made meanwhile by
-- another worker, overlapping one of an earlier period setting, rows of the
-- default partition in its range, or a lock it would wait for (a short lock
-- timeout: making a partition locks jobs_finished, which every completion
-- writes, and a completion must not queue behind a DDL that queues behind a
-- long reader).
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
begin
    select * into s from pgjobs.partition_settings;
    for p in
        select (pgjobs.finished_partition(coalesce(partitions_ensure.now, pg_catalog.now())
                                          + s.period * k, s.period)).*
          from generate_series(0, s.periods_ahead) k
    loop
        continue when to_regclass(format('pgjobs.%I', p.name)) is not null;
        begin
            execute format('create table pgjobs.%I partition of pgjobs.jobs_finished '
                           'for values from (%L) to (%L)', p.name, p.lo, p.hi);
            execute format('alter table pgjobs.%I enable row level security, '
                           'force row level security', p.name);
            made := made + 1;
        exception when duplicate_table or invalid_object_definition or check_violation
                       or lock_not_available then
            null;
        end;
    end loop;
    return made;
end
$$;

-- Retention in constant time: drops the oldest partition of finished jobs
-- whose whole period ended before cutoff, with its jobs' history and dedup
-- keys, in one transaction (a process killed meanwhile leaves it whole, for
-- the next call). Returns how many jobs it held; NULL when no partition is
-- that old. The rows of the partition straddling the cut-off, and of the
-- default one, are the row-by-row pruner's (job_prune_batch).
create function pgjobs.partition_drop_oldest(cutoff timestamptz) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '1s'
as $$
declare
    part regclass;
    lo   timestamptz;
    hi   timestamptz;
    n    bigint;
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
    if part is null then
        return null;
    end if;
    -- Holds its rows still (a retry would move one out after its history went);
    -- readers through pgjobs.jobs go on.
    execute format('lock table %s in share mode', part);
    select count(*) into n from pgjobs.jobs j
     where j.state in ('completed', 'dead', 'canceled') and j.finished_at >= lo
       and j.finished_at < hi;
    delete from pgjobs.job_events e using pgjobs.jobs j
     where j.state in ('completed', 'dead', 'canceled') and j.finished_at >= lo
       and j.finished_at < hi and e.job_id = j.id;
    delete from pgjobs.dedup_keys d using pgjobs.jobs j
     where j.state in ('completed', 'dead', 'canceled') and j.finished_at >= lo
       and j.finished_at < hi and j.dedup_key is not null
       and d.organization = coalesce(j.organization, '') and d.job_type = j.job_type
       and d.dedup_key = j.dedup_key and d.job_id = j.id;
    execute format('drop table %s', part);
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
