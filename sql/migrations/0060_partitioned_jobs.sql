-- Finished work leaves the hot path (issue 19): pgjobs.jobs becomes a table
-- partitioned by state. Unfinished jobs live in jobs_active, the only
-- partition the claim, the completions, lease renewal and the rescue touch;
-- finished ones in jobs_finished, itself partitioned by period of finished_at
-- (pgjobs.partition_settings), made ahead by the workers
-- (pgjobs.partitions_ensure) and dropped whole by retention
-- (pgjobs.partition_drop_oldest). Rows finished before this migration go to
-- jobs_finished_history (emptied by the row-by-row pruner), any finished at a
-- time no partition was made for to jobs_finished_default.
--
-- The old table is renamed, the partitioned one made in its image (the same
-- columns, defaults and checks), the rows moved, and everything bound to the
-- old table remade on the new one: indexes, triggers, the policy, grants,
-- owner, the views, job_problem (its argument is the table's row type) and
-- the id sequence's OWNED BY. A unique key of a partitioned table must hold
-- the partition key, so (organization, id) is no longer a unique key: ids
-- come from one sequence through the insert trigger alone, and a plain index
-- serves listing per organization.

alter sequence pgjobs.jobs_id_seq owned by none;
drop view pgjobs.queue_depth, pgjobs.job_counts, pgjobs.dead_letter, pgjobs.workers,
          pgjobs.schedule_status, pgjobs.unserved_job_types;
drop function pgjobs.job_problem(pgjobs.jobs);
alter table pgjobs.jobs rename to jobs_unpartitioned;
alter table pgjobs.jobs_unpartitioned drop constraint jobs_organization_id_key;
drop index pgjobs.jobs_runnable_idx, pgjobs.jobs_running_lease_idx,
           pgjobs.jobs_waiting_parents_idx, pgjobs.jobs_id_idx, pgjobs.jobs_finished_idx;
drop trigger jobs_after_update on pgjobs.jobs_unpartitioned;
drop trigger jobs_authorize_insert on pgjobs.jobs_unpartitioned;
drop trigger jobs_before_insert on pgjobs.jobs_unpartitioned;
drop trigger jobs_accept_input on pgjobs.jobs_unpartitioned;
drop trigger jobs_update_guard on pgjobs.jobs_unpartitioned;
drop trigger jobs_after_delete on pgjobs.jobs_unpartitioned;

create table pgjobs.jobs (
    like pgjobs.jobs_unpartitioned including defaults including constraints
                                   including storage including compression
) partition by list (state);
create table pgjobs.jobs_active partition of pgjobs.jobs
    for values in ('waiting', 'queued', 'running', 'retrying')
-- Every claim and completion leaves a dead row version behind: vacuum the
-- unfinished jobs after a few thousand of them rather than a fifth of the
-- table, or the claim's index fills with dead entries it must step over.
with (autovacuum_vacuum_scale_factor = 0.0,
      autovacuum_vacuum_threshold = 5000,
      autovacuum_vacuum_cost_delay = 0);

-- One partition per period (pgjobs.partitions_ensure makes them ahead of
-- time); a row no period's partition holds (finished before partitioning, or
-- at a time none was made for) lands in the default one, so no completion
-- ever fails for want of a partition.
-- A finished job always holds a lease token (0: it never ran), which no new
-- row has: moving back to jobs_active (pgjobs.retry) fires that partition's
-- insert triggers, and jobs_before_insert must not take it for a new job.
create table pgjobs.jobs_finished partition of pgjobs.jobs (
    constraint jobs_finished_token_check check (lease_token is not null)
) for values in ('completed', 'dead', 'canceled')
    partition by range (finished_at);
create table pgjobs.jobs_finished_default partition of pgjobs.jobs_finished default;
-- Jobs finished before the schema had partitions of periods (a database from
-- before 0060 moves its finished rows here): everything up to the start of
-- the day it was installed. Retention empties it row by row; with it, the
-- default partition stays small, which making a partition reads whole.
do $$
begin
    execute format('create table pgjobs.jobs_finished_history partition of pgjobs.jobs_finished'
                   ' for values from (minvalue) to (%L)',
                   date_bin('1 day', now(), timestamptz '2000-01-03 00:00:00+00'));
end
$$;

-- The period of jobs_finished's partitions and how many are made ahead. One
-- row; the owner changes it (partitions already made keep their bounds).
create table pgjobs.partition_settings (
    singleton      boolean primary key default true check (singleton),
    period         interval not null default '1 day'
        check (period >= interval '1 hour' and period <= interval '31 days'
               and date_part('month', period) = 0 and date_part('year', period) = 0),
    periods_ahead  int not null default 3 check (periods_ahead between 1 and 100)
);
insert into pgjobs.partition_settings default values;

-- The claim reads only runnable rows: finished jobs cost it nothing.
create index jobs_runnable_idx on pgjobs.jobs (priority, run_at, id)
    where state in ('queued', 'retrying');
-- The rescuer reads only running rows.
create index jobs_running_lease_idx on pgjobs.jobs (lease_expires_at)
    where state = 'running';
-- Parents find their waiting children.
create index jobs_waiting_parents_idx on pgjobs.jobs using gin (depends_on)
    where state = 'waiting';
-- Lookups by id, one probe per partition; and listing per organization.
create index jobs_id_idx on pgjobs.jobs (id);
create index jobs_organization_id_idx on pgjobs.jobs (organization, id);
-- Retention finds old finished rows. The states are pgjobs.is_finished's
-- (30_state_machine.sql): the planner inlines that function, so a query that
-- filters with it matches this predicate.
create index jobs_finished_idx on pgjobs.jobs (finished_at)
    where state in ('completed', 'dead', 'canceled');

-- The rows, before any trigger exists: they keep their ids and states. A
-- finished job that never ran gets lease token 0 (jobs_finished_token_check).
update pgjobs.jobs_unpartitioned set lease_token = 0
 where lease_token is null and state in ('completed', 'dead', 'canceled');
insert into pgjobs.jobs select * from pgjobs.jobs_unpartitioned;
drop table pgjobs.jobs_unpartitioned;

create function pgjobs.job_problem(j pgjobs.jobs) returns text
language sql immutable parallel safe as $$
    select case
        when not pgjobs.name_ok(j.job_type)
            then 'job_type must be 1-200 characters without control characters'
        when not pgjobs.name_ok(j.queue)
            then 'queue must be 1-200 characters without control characters'
        when j.organization is not null and not pgjobs.name_ok(j.organization)
            then 'organization must be 1-200 characters without control characters'
        when octet_length(j.dedup_key) > 1000
            then 'dedup_key must be at most 1000 bytes'
        when j.priority not between 0 and 3
            then format('priority must be 0-3, got %s', j.priority)
        when j.max_attempts not between 1 and pgjobs.max_attempts_limit()
            then format('max_attempts must be 1-%s, got %s', pgjobs.max_attempts_limit(),
                        j.max_attempts)
        when j.timeout_seconds not between 0 and pgjobs.max_timeout_seconds()
            then format('timeout_seconds must be 0-%s, got %s', pgjobs.max_timeout_seconds(),
                        j.timeout_seconds)
        when not (j.run_at > '0001-01-02 00:00:00+00' and j.run_at < '9999-12-30 00:00:00+00')
            then format('run_at must be a finite time between the years 1 and 9999, got %s',
                        j.run_at)
        when cardinality(j.depends_on) > 1000
            then 'depends_on may name at most 1000 jobs'
    end
$$;

create trigger jobs_after_update
    after update on pgjobs.jobs
    referencing old table as old_rows new table as new_rows
    for each statement execute function pgjobs.jobs_after_update();

create trigger jobs_authorize_insert
    before insert on pgjobs.jobs_active
    for each row
    when (pgjobs.current_organization() is null)
    execute function pgjobs.jobs_authorize_insert();

create trigger jobs_before_insert
    before insert on pgjobs.jobs_active
    for each row
    when (new.lease_token is null)
    execute function pgjobs.jobs_before_insert();

create trigger jobs_accept_input
    before insert on pgjobs.jobs_active
    for each row
    when (not pgjobs.name_ok(coalesce(new.organization, pgjobs.current_organization()))
          or not pgjobs.name_ok(new.queue)
          or octet_length(new.dedup_key) > 1000
          or new.priority not between 0 and 3
          or new.max_attempts not between 1 and pgjobs.max_attempts_limit()
          or new.timeout_seconds not between 0 and pgjobs.max_timeout_seconds()
          or not (new.run_at > '0001-01-02 00:00:00+00' and new.run_at < '9999-12-30 00:00:00+00')
          or cardinality(new.depends_on) > 1000
          or jsonb_typeof(new.payload) <> 'object'
          or pg_column_size(new.payload || '{}') > pgjobs.max_payload_bytes()
          or jsonb_path_exists(new.payload, 'strict $.**{32}')
          or jsonb_path_exists(new.payload,
                 'strict $.** ? (@.type() == "number" && (@ >= 1e300 || @ <= -1e300))'))
    execute function pgjobs.jobs_accept_input();

create trigger jobs_update_guard
    before update of payload, job_type, queue, organization, dedup_key on pgjobs.jobs
    for each row
    when (old.payload is distinct from new.payload or old.job_type is distinct from new.job_type
          or old.queue is distinct from new.queue
          or old.organization is distinct from new.organization
          or old.dedup_key is distinct from new.dedup_key)
    execute function pgjobs.jobs_update_guard();

create trigger jobs_after_delete
    after delete on pgjobs.jobs
    referencing old table as old_rows
    for each statement execute function pgjobs.jobs_after_delete();

-- A dependency's cancel gives the child a lease token (jobs_finished_token_check).
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

-- Born canceled (its parent failed): see jobs_after_insert_canceled.
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
    return new;
end
$$;

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

-- The hot path names jobs_active's states, so the planner prunes to it.
create or replace function pgjobs.take(worker text, ids bigint[], lease_seconds double precision,
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

create or replace function pgjobs.rate_take(ids bigint[], t timestamptz) returns bigint[]
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

create function pgjobs.moved_row_tries() returns int
language sql immutable parallel safe as $$ select 3 $$;

create or replace function pgjobs.cancel(id bigint) returns text
language plpgsql
security definer  -- the owner's rights: the app may not UPDATE jobs itself
set search_path = pg_catalog, pg_temp
as $$
declare
    new_state text;
    old_state text;
    policy    text;
    creator   text;
    tries     int := 0;
begin
    -- A job that finished meanwhile (a completion moved its row to
    -- jobs_finished after this statement's snapshot) fails the UPDATE with a
    -- serialization error; the next try sees it finished.
    loop
        begin
            update pgjobs.jobs j
               set state = case when j.state = 'running' then 'running' else 'canceled' end,
                   cancel_requested_at = case when j.state = 'running' then now() end,
                   finished_at = case when j.state = 'running' then null else now() end,
                   canceled_by = pgjobs.current_actor(),
                   lease_token = coalesce(j.lease_token, 0)  -- jobs_finished_token_check
              from pgjobs.job_types t
             where j.id = cancel.id
               and t.name = j.job_type
               and j.state in ('waiting', 'queued', 'retrying', 'running')
               and j.cancel_requested_at is null
               and (t.cancel_policy = 'organization'
                    or j.created_by is not distinct from pgjobs.current_actor()
                    or pgjobs.acts_as_admin())
            returning j.state into new_state;
            exit;
        exception when serialization_failure then
            tries := tries + 1;
            if tries >= pgjobs.moved_row_tries() then
                raise;
            end if;
        end;
    end loop;
    if new_state = 'running' then
        perform pg_notify('pgjobs_cancel', cancel.id::text);
    elsif new_state is null then
        select j.state, t.cancel_policy, j.created_by
          into old_state, policy, creator
          from pgjobs.jobs j left join pgjobs.job_types t on t.name = j.job_type
         where j.id = cancel.id;
        if old_state is null then
            raise exception 'pgjobs: no job %', cancel.id using errcode = 'PJ002';
        elsif policy = 'creator' and creator is distinct from pgjobs.current_actor()
              and not pgjobs.acts_as_admin() then
            -- The job is visible (same organization): saying so is no leak.
            raise exception 'pgjobs: only the creator of job % (or an admin) may cancel it',
                cancel.id using errcode = 'insufficient_privilege';
        elsif old_state = 'running' then
            return 'running';  -- already being canceled
        end if;
        raise exception 'pgjobs: job % is already %', cancel.id, old_state
            using errcode = 'PJ003';
    end if;
    return new_state;
end
$$;

create or replace function pgjobs.retry(id bigint) returns text
language plpgsql
security definer  -- the owner's rights, as cancel
set search_path = pg_catalog, pg_temp
as $$
declare
    new_state text;
    old_state text;
    tries     int := 0;
begin
    -- Moves the job back to jobs_active; a concurrent retry that moved it first
    -- fails this UPDATE with a serialization error, and the next try sees it
    -- queued (as cancel above).
    loop
        begin
            update pgjobs.jobs j
               set state = 'queued', attempt = 0, run_at = now(), finished_at = null,
                   canceled_by = null, cancel_requested_at = null, result = null
             where j.id = retry.id and j.state in ('dead', 'canceled')
            returning j.state into new_state;
            exit;
        exception when serialization_failure then
            tries := tries + 1;
            if tries >= pgjobs.moved_row_tries() then
                raise;
            end if;
        end;
    end loop;
    if new_state is null then
        select j.state into old_state from pgjobs.jobs j where j.id = retry.id;
        if old_state is null then
            raise exception 'pgjobs: no job %', retry.id using errcode = 'PJ002';
        end if;
        raise exception 'pgjobs: job % is %, only dead or canceled jobs can be retried',
            retry.id, old_state using errcode = 'PJ003';
    end if;
    return new_state;
end
$$;

-- The views, as they were (80_views.sql), on the new table.
create view pgjobs.queue_depth with (security_invoker = true) as
select queue,
       priority,
       count(*) filter (where state = 'queued' and run_at <= now()) as queued,
       count(*) filter (where state = 'queued' and run_at > now())  as scheduled,
       count(*) filter (where state = 'running')                    as running,
       count(*) filter (where state = 'retrying')                   as retrying,
       count(*) filter (where state = 'waiting')                    as waiting,
       coalesce(extract(epoch from now() - min(run_at)
                        filter (where state = 'queued' and run_at <= now())), 0)
           as oldest_queued_seconds
  from pgjobs.jobs
 where not pgjobs.is_finished(state)
 group by queue, priority;

create view pgjobs.job_counts with (security_invoker = true) as
select organization, job_type, state, count(*) as jobs
  from pgjobs.jobs
 group by organization, job_type, state;

create view pgjobs.dead_letter with (security_invoker = true) as
select id, organization, job_type, queue, attempt, max_attempts, last_error_class as error_class,
       last_error, payload, created_at, finished_at
  from pgjobs.jobs
 where state = 'dead';

create view pgjobs.workers with (security_invoker = true) as
select w.name, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at,
       extract(epoch from now() - w.heartbeat_at) as heartbeat_age_seconds,
       count(j.id)                                  as running_jobs,
       coalesce(array_agg(j.id order by j.id) filter (where j.id is not null), '{}') as job_ids
  from pgjobs.worker_processes w
  left join pgjobs.jobs j on j.state = 'running' and j.worker = w.name
 where w.heartbeat_at > now() - interval '1 minute'
 group by w.name, w.host, w.pid, w.queues, w.started_at, w.heartbeat_at;

create view pgjobs.schedule_status with (security_invoker = true) as
select s.organization, s.name, s.job_type, s.cron, s.timezone, s.enabled, s.catch_up,
       s.next_fire_at, s.last_fired_at, s.last_job_id, j.state as last_job_state,
       j.finished_at as last_job_finished_at, s.last_error, s.created_at
  from pgjobs.schedules s
  left join pgjobs.jobs j on j.id = s.last_job_id;

create view pgjobs.unserved_job_types with (security_invoker = true) as
select t.name as job_type, t.queue, t.handler,
       (select count(*) from pgjobs.jobs j
         where j.job_type = t.name and j.state in ('queued', 'retrying')) as runnable_jobs
  from pgjobs.job_types t
 where not exists (select from pgjobs.worker_processes w
                    where w.heartbeat_at > now() - interval '1 minute'
                      and t.queue = any(w.queues)
                      and (w.job_types is null or t.name = any(w.job_types)));

-- Security, as 90_security.sql has it.
alter table pgjobs.jobs enable row level security;
alter table pgjobs.jobs force row level security;
create policy organization_scope on pgjobs.jobs
    using ((select pgjobs.sees_all())
           or organization = (select pgjobs.current_organization()))
    with check ((select pgjobs.sees_all())
                or organization = (select pgjobs.current_organization()));
alter table pgjobs.jobs_active enable row level security;
alter table pgjobs.jobs_active force row level security;
alter table pgjobs.jobs_finished enable row level security;
alter table pgjobs.jobs_finished force row level security;
alter table pgjobs.jobs_finished_default enable row level security;
alter table pgjobs.jobs_finished_default force row level security;
alter table pgjobs.jobs_finished_history enable row level security;
alter table pgjobs.jobs_finished_history force row level security;

do $$
declare
    t text;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; objects keep their owner',
            current_user;
        return;
    end if;
    foreach t in array array['jobs', 'jobs_active', 'jobs_finished', 'jobs_finished_default',
                             'jobs_finished_history', 'partition_settings', 'queue_depth', 'job_counts', 'dead_letter',
                             'workers', 'schedule_status', 'unserved_job_types'] loop
        execute format('alter table pgjobs.%I owner to pgjobs_owner', t);
    end loop;
    foreach t in array array['pgjobs.partitions_ensure(timestamptz)',
                             'pgjobs.partition_drop_oldest(timestamptz)',
                             'pgjobs.jobs_after_insert_canceled()'] loop
        execute format('alter function %s owner to pgjobs_owner', t);
    end loop;
end
$$;

-- Once the table has the sequence's owner.
alter sequence pgjobs.jobs_id_seq owned by pgjobs.jobs.id;

revoke all on pgjobs.jobs, pgjobs.jobs_active, pgjobs.jobs_finished,
              pgjobs.jobs_finished_default, pgjobs.jobs_finished_history, pgjobs.partition_settings, pgjobs.queue_depth,
              pgjobs.job_counts, pgjobs.dead_letter, pgjobs.workers, pgjobs.schedule_status,
              pgjobs.unserved_job_types
    from public;
grant create on schema pgjobs to pgjobs_owner;
grant select on pgjobs.jobs to pgjobs_app;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_app;
grant select on pgjobs.queue_depth, pgjobs.job_counts, pgjobs.dead_letter to pgjobs_app;
grant select, insert, update, delete on pgjobs.jobs to pgjobs_worker;
grant select on pgjobs.queue_depth, pgjobs.job_counts, pgjobs.dead_letter, pgjobs.workers,
                pgjobs.unserved_job_types
    to pgjobs_worker, pgjobs_admin;
grant select, delete on pgjobs.jobs to pgjobs_admin;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_admin;
grant update (run_at, priority, queue) on pgjobs.jobs to pgjobs_admin;
grant select on pgjobs.schedule_status to pgjobs_app, pgjobs_worker, pgjobs_admin;
revoke execute on function pgjobs.partitions_ensure(timestamptz),
                           pgjobs.partition_drop_oldest(timestamptz)
    from public;
grant execute on function pgjobs.partitions_ensure(timestamptz),
                          pgjobs.partition_drop_oldest(timestamptz)
    to pgjobs_worker, pgjobs_admin;
grant select on pgjobs.partition_settings to pgjobs_worker, pgjobs_admin;

analyze pgjobs.jobs;
