-- History leaves the hot path as finished jobs did in 0060 (issue 19):
-- pgjobs.job_events becomes a table partitioned by range of `at`, one
-- partition per period of pgjobs.partition_settings, made ahead by
-- pgjobs.partitions_ensure beside those of finished jobs and dropped whole by
-- retention (pgjobs.partition_drop_oldest), which first moves out the events
-- of the jobs it keeps. Rows written before this migration, and for the rest
-- of its day, go to job_events_history, those at a time no partition was made
-- for to job_events_default.
--
-- The old table is renamed (its identity sequence too), the partitioned one
-- made as 20_tables.sql has it, the rows moved with their ids, the new
-- identity sequence set where the old one stood, and everything bound to the
-- old table remade on the new one: indexes, the policy, grants, owner and the
-- two views that read history.

drop view pgjobs.processing_times, pgjobs.failure_rates;
alter table pgjobs.job_events rename to job_events_unpartitioned;
alter sequence pgjobs.job_events_id_seq rename to job_events_unpartitioned_id_seq;
drop index pgjobs.job_events_job_idx, pgjobs.job_events_at_idx;
drop policy organization_scope on pgjobs.job_events_unpartitioned;

-- One row per state change and per finished attempt.
create table pgjobs.job_events (
    id            bigint generated always as identity,  -- order of events
    job_id        bigint not null,
    organization  text,
    job_type      text not null,
    attempt       int not null,
    from_state    text,
    to_state      text not null,
    worker        text,
    error_class   text,
    message       text,
    traceback     text,
    duration_ms   double precision,
    at            timestamptz not null default now(),
    -- Who made the change: a column default, so every writer of history
    -- records the actor of the transaction that moved the job.
    actor         text default pgjobs.current_actor()
) partition by range (at);
create index job_events_job_idx on pgjobs.job_events (job_id, id);
-- Time windows (views, retention): rows arrive in time order, so a BRIN index
-- serves them at a fraction of a btree's cost per insert.
create index job_events_at_idx on pgjobs.job_events using brin (at);

-- A row no period's partition holds lands in the default one, so no history
-- write ever fails for want of a partition; the events of a kept job whose
-- period was dropped live there too.
create table pgjobs.job_events_default partition of pgjobs.job_events default;
-- History written before this migration, and for the rest of its day: up to
-- the start of the next day (a fresh install's ends at the start of its own
-- day, having no history). So the default partition takes none of today's
-- history (which would keep today's partition from being made, and be read
-- whole each time a later one is); the workers make tomorrow's as usual.
-- Dropped whole once retention passes its end.
do $$
begin
    execute format('create table pgjobs.job_events_history partition of pgjobs.job_events'
                   ' for values from (minvalue) to (%L)',
                   date_bin('1 day', now(), timestamptz '2000-01-03 00:00:00+00')
                   + interval '1 day');
end
$$;

-- The rows, before any partition of a period exists: they keep their ids, so
-- their order.
insert into pgjobs.job_events
       (id, job_id, organization, job_type, attempt, from_state, to_state, worker, error_class,
        message, traceback, duration_ms, at, actor)
overriding system value
select id, job_id, organization, job_type, attempt, from_state, to_state, worker, error_class,
       message, traceback, duration_ms, at, actor
  from pgjobs.job_events_unpartitioned;
-- New ids go on where the old sequence stood.
select setval('pgjobs.job_events_id_seq', s.last_value, s.is_called)
  from pgjobs.job_events_unpartitioned_id_seq s;
drop table pgjobs.job_events_unpartitioned;

create function pgjobs.events_partition(t timestamptz, period interval,
                                        out name text, out lo timestamptz, out hi timestamptz)
language sql stable as $$
    select 'job_events_' || substr(f.name, length('jobs_finished_') + 1), f.lo, f.hi
      from pgjobs.finished_partition(t, period) f
$$;

create or replace function pgjobs.partitions_ensure(now timestamptz default null) returns int
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

create or replace function pgjobs.partition_drop_oldest(cutoff timestamptz) returns bigint
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

-- The views, as they were (80_views.sql), on the new table.
create view pgjobs.processing_times with (security_invoker = true) as
select job_type,
       count(*)                                                  as attempts,
       count(*) filter (where to_state = 'completed')            as completed,
       round(avg(duration_ms)::numeric, 3)                       as avg_ms,
       round((percentile_cont(0.5) within group (order by duration_ms))::numeric, 3) as p50_ms,
       round((percentile_cont(0.95) within group (order by duration_ms))::numeric, 3) as p95_ms,
       round(max(duration_ms)::numeric, 3)                       as max_ms
  from pgjobs.job_events
 where from_state = 'running' and to_state <> 'queued'
   and duration_ms is not null
   and at > now() - interval '1 hour'
 group by job_type;

create view pgjobs.failure_rates with (security_invoker = true) as
select job_type,
       count(*)                                                       as attempts,
       count(*) filter (where to_state in ('retrying', 'dead'))       as failures,
       count(*) filter (where error_class = 'timeout')                as timeouts,
       count(*) filter (where to_state = 'dead')                      as dead,
       round(count(*) filter (where to_state in ('retrying', 'dead'))::numeric
             / nullif(count(*), 0), 4)                                as rate
  from pgjobs.job_events
 where from_state = 'running' and to_state in ('completed', 'retrying', 'dead')
   and at > now() - interval '24 hours'
 group by job_type;

-- Security, as 90_security.sql has it.
alter table pgjobs.job_events enable row level security;
alter table pgjobs.job_events force row level security;
create policy organization_scope on pgjobs.job_events
    using ((select pgjobs.sees_all())
           or organization = (select pgjobs.current_organization()))
    with check ((select pgjobs.sees_all())
                or organization = (select pgjobs.current_organization()));
alter table pgjobs.job_events_default enable row level security;
alter table pgjobs.job_events_default force row level security;
alter table pgjobs.job_events_history enable row level security;
alter table pgjobs.job_events_history force row level security;

do $$
declare
    t text;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; objects keep their owner',
            current_user;
        return;
    end if;
    foreach t in array array['job_events', 'job_events_default', 'job_events_history',
                             'processing_times', 'failure_rates'] loop
        execute format('alter table pgjobs.%I owner to pgjobs_owner', t);
    end loop;
end
$$;

revoke all on pgjobs.job_events, pgjobs.job_events_default, pgjobs.job_events_history,
              pgjobs.processing_times, pgjobs.failure_rates
    from public;
revoke all on sequence pgjobs.job_events_id_seq from public;
grant select on pgjobs.job_events to pgjobs_app;
grant select, delete on pgjobs.job_events to pgjobs_worker, pgjobs_admin;
grant usage on sequence pgjobs.job_events_id_seq to pgjobs_worker, pgjobs_admin;
grant select on pgjobs.processing_times, pgjobs.failure_rates
    to pgjobs_app, pgjobs_worker, pgjobs_admin;

analyze pgjobs.job_events;
