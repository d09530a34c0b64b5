-- Row-level security per organization, and the least privileges each role
-- needs (the roles are made in 10_roles_and_scope.sql).
--
-- Every table with an organization column has RLS enabled and FORCED, so the
-- owner is bound too. One policy per table says who sees a row: a session
-- scoped to an organization (pgjobs.tenant, or the worker inside a job's own
-- transaction) sees that organization's rows; an unscoped worker or admin
-- (pgjobs.sees_all()) sees every row; anyone else sees nothing. The scalar
-- subqueries make each call an InitPlan: run once per statement, not per row.
--
-- Nothing here is SECURITY DEFINER: every pgjobs function and trigger runs
-- with the caller's rights, so row-level security applies inside them as it
-- does to the caller's own queries.

do $$
declare
    t text;
begin
    foreach t in array array['jobs', 'job_events', 'dedup_keys', 'rate_windows', 'schedules',
                             'schedule_fires'] loop
        execute format('alter table pgjobs.%I enable row level security', t);
        execute format('alter table pgjobs.%I force row level security', t);
        execute format($p$
            create policy organization_scope on pgjobs.%I
                using ((select pgjobs.sees_all())
                       or organization = (select pgjobs.current_organization()))
                with check ((select pgjobs.sees_all())
                            or organization = (select pgjobs.current_organization()))
            $p$, t);
    end loop;
    -- The partitions of jobs (0060) and of history (0090): enabled and forced
    -- with no policy and no grants, nobody reads or writes one directly;
    -- through pgjobs.jobs or pgjobs.job_events the parent's policy above
    -- applies. pgjobs.partitions_ensure makes later ones so.
    foreach t in array array['jobs_active', 'jobs_finished', 'jobs_finished_default',
                             'jobs_finished_history', 'job_events_default',
                             'job_events_history'] loop
        execute format('alter table pgjobs.%I enable row level security', t);
        execute format('alter table pgjobs.%I force row level security', t);
    end loop;
end
$$;

-- The runtime roles own nothing: the tables, sequences and views belong to
-- pgjobs_owner, which RLS binds like a tenant (FORCE). Skipped, with a notice,
-- when the migrating role may not hand objects to pgjobs_owner.
do $$
declare
    obj record;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; objects keep their owner',
            current_user;
        return;
    end if;
    for obj in
        select c.relname, c.relkind from pg_class c
         where c.relnamespace = 'pgjobs'::regnamespace
           and c.relkind in ('r', 'p', 'v', 'S')
           and c.relname <> 'schema_migrations'
           -- sequences owned by a column (jobs.id, identities) follow their table
           and (c.relkind <> 'S' or not exists (select from pg_depend d
                            where d.classid = 'pg_class'::regclass and d.objid = c.oid
                              and d.deptype in ('a', 'i')))
    loop
        execute format('alter %s pgjobs.%I owner to pgjobs_owner',
                       case obj.relkind when 'v' then 'view' when 'S' then 'sequence'
                                        else 'table' end,
                       obj.relname);
    end loop;
end
$$;

revoke all on all tables in schema pgjobs from public;
revoke all on all sequences in schema pgjobs from public;
grant usage on schema pgjobs to pgjobs_owner, pgjobs_app, pgjobs_worker, pgjobs_admin;
-- The owner makes the partitions of finished jobs (pgjobs.partitions_ensure).
grant create on schema pgjobs to pgjobs_owner;

-- Applications: read their organization's rows; enqueue by INSERT of a job's
-- input columns (the insert trigger draws the id and fills the rest); change
-- jobs only through pgjobs.cancel and pgjobs.retry. History, dedup keys and
-- the dependency cascade are written for them by the definer functions below.
grant select on pgjobs.jobs to pgjobs_app;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_app;
grant select on pgjobs.job_events, pgjobs.dedup_keys to pgjobs_app;
grant select on pgjobs.job_types, pgjobs.rate_windows to pgjobs_app;
grant select on pgjobs.queue_depth, pgjobs.job_counts, pgjobs.processing_times,
                pgjobs.failure_rates, pgjobs.dead_letter
    to pgjobs_app;

-- Workers: claim, run, record, rescue, prune (--prune-after), register types.
-- History is written by pgjobs alone (workers delete it when pruning); dedup
-- keys only by the triggers, as the owner.
grant select, insert, update, delete on pgjobs.jobs, pgjobs.rate_windows,
                                        pgjobs.worker_processes
    to pgjobs_worker;
grant select, delete on pgjobs.job_events to pgjobs_worker;
grant select on pgjobs.dedup_keys to pgjobs_worker;
grant select, insert, update on pgjobs.job_types to pgjobs_worker;
grant select on pgjobs.schema_migrations to pgjobs_worker;
grant usage on all sequences in schema pgjobs to pgjobs_worker;
-- The claim reads how often its hints were made void (50_claim.sql).
grant select on sequence pgjobs.claim_rewinds to pgjobs_worker;
grant select on pgjobs.queue_depth, pgjobs.job_counts, pgjobs.processing_times,
                pgjobs.failure_rates, pgjobs.dead_letter, pgjobs.workers,
                pgjobs.unserved_job_types
    to pgjobs_worker;

-- Admins: everything an operator does, across organizations; no claiming, no
-- hand-made state changes (retry and cancel do that), no job types (owner and
-- workers). UPDATE of run_at also lets prune lock the rows it deletes.
grant select, delete on pgjobs.jobs, pgjobs.job_events to pgjobs_admin;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_admin;
grant update (run_at, priority, queue) on pgjobs.jobs to pgjobs_admin;
grant select on pgjobs.dedup_keys to pgjobs_admin;
grant select, delete on pgjobs.rate_windows, pgjobs.worker_processes to pgjobs_admin;
grant select on pgjobs.job_types to pgjobs_admin;
grant select on pgjobs.schema_migrations to pgjobs_admin;
grant usage on sequence pgjobs.jobs_id_seq, pgjobs.job_events_id_seq to pgjobs_admin;
grant select on pgjobs.queue_depth, pgjobs.job_counts, pgjobs.processing_times,
                pgjobs.failure_rates, pgjobs.dead_letter, pgjobs.workers,
                pgjobs.unserved_job_types
    to pgjobs_admin;

-- The state relay's outbox: written by the workers' own sessions, read and
-- emptied by the relay (a worker supervisor). Nobody else sees it.
grant select, insert, delete on pgjobs.state_outbox to pgjobs_worker;
revoke execute on function pgjobs.state_relay(bigint, int) from public;
grant execute on function pgjobs.state_relay(bigint, int) to pgjobs_worker;

-- The SECURITY DEFINER functions run as pgjobs_owner, whom FORCE ROW LEVEL
-- SECURITY binds, never as the (often superuser) role that installed them.
do $$
declare
    f text;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; definer functions keep their owner',
            current_user;
        return;
    end if;
    foreach f in array array['pgjobs.jobs_before_insert()', 'pgjobs.jobs_after_update()',
                             'pgjobs.jobs_after_delete()', 'pgjobs.cancel(bigint)',
                             'pgjobs.retry(bigint)', 'pgjobs.trigger_schedule(text, text)',
                             'pgjobs.schedule_fire(jsonb, timestamptz)',
                             'pgjobs.partitions_ensure(timestamptz)',
                             'pgjobs.partition_drop_oldest(timestamptz)',
                             'pgjobs.jobs_after_insert_canceled()',
                             'pgjobs.enqueue_plain(text[], jsonb[], text[], text[], smallint[], '
                             'timestamptz[], int[], int[])'] loop
        execute format('alter function %s owner to pgjobs_owner', f);
    end loop;
end
$$;

-- The claim's rewind trigger (50_claim.sql) moves a sequence applications and
-- admins may not (the workers' usage of every sequence above covers it): as
-- the owner, like the definer functions above.
do $$
begin
    if pg_has_role('pgjobs_owner', 'MEMBER') then
        alter function pgjobs.claim_rewind() owner to pgjobs_owner;
    end if;
end
$$;

-- The claim is the workers' alone.
revoke execute on function pgjobs.claim(text, text[], int, double precision, timestamptz, text[]),
                           pgjobs.take(text, bigint[], double precision, timestamptz),
                           pgjobs.rate_take(bigint[], timestamptz),
                           pgjobs.claim_floor(text[], text[], int)
    from public;
grant execute on function pgjobs.claim(text, text[], int, double precision, timestamptz, text[]),
                          pgjobs.take(text, bigint[], double precision, timestamptz),
                          pgjobs.rate_take(bigint[], timestamptz),
                          pgjobs.claim_floor(text[], text[], int)
    to pgjobs_worker;

-- So is the completion (as any UPDATE of jobs: the workers' right to write
-- these columns; the function adds none).
revoke execute on function pgjobs.complete_many(bigint[], bigint[], jsonb, double precision[],
                                                timestamptz)
    from public;
grant execute on function pgjobs.complete_many(bigint[], bigint[], jsonb, double precision[],
                                               timestamptz)
    to pgjobs_worker;

-- Schedules: applications manage their own organization's (row-level security
-- confines them); firing is the workers' (and operators') job.
revoke all on pgjobs.schedules, pgjobs.schedule_fires, pgjobs.schedule_status from public;

grant select, insert, update, delete on pgjobs.schedules to pgjobs_app;
-- Fire records are written by schedule_fire and trigger_schedule (as the
-- owner); an application only reads them and unschedule deletes them.
grant select, delete on pgjobs.schedule_fires to pgjobs_app;
grant select on pgjobs.schedule_status to pgjobs_app;

grant select, insert, update, delete on pgjobs.schedules, pgjobs.schedule_fires
    to pgjobs_worker, pgjobs_admin;
grant select on pgjobs.schedule_status to pgjobs_worker, pgjobs_admin;

revoke execute on function pgjobs.schedule_fire(jsonb, timestamptz) from public;
grant execute on function pgjobs.schedule_fire(jsonb, timestamptz) to pgjobs_worker, pgjobs_admin;

-- Maintenance turns: the workers' alone, so no other role can take or block one.
revoke all on pgjobs.maintenance_leases from public;
grant select, insert, update on pgjobs.maintenance_leases to pgjobs_worker;
grant select on pgjobs.maintenance_leases to pgjobs_admin;

-- Partitions of finished jobs and of history: made ahead by the workers,
-- dropped by retention
-- (workers' --prune-after, an operator's prune).
revoke execute on function pgjobs.partitions_ensure(timestamptz),
                           pgjobs.partition_drop_oldest(timestamptz)
    from public;
grant execute on function pgjobs.partitions_ensure(timestamptz),
                          pgjobs.partition_drop_oldest(timestamptz)
    to pgjobs_worker, pgjobs_admin;
grant select on pgjobs.partition_settings to pgjobs_worker, pgjobs_admin;
