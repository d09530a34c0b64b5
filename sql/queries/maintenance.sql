-- Maintenance: the workers' vacuum of the jobs table and retention.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: jobs_vacuum_lock
-- Takes the vacuum lock when the jobs table has dead tuples to clear, this
-- role may vacuum it, and nobody is vacuuming it already (autovacuum included).
-- A vacuum reads every index whole, so a bigger table waits for more dead
-- tuples (a share of its live ones): its cost per job stays flat as it grows.
-- And only when it can remove something: the oldest transaction that holds
-- back what may be removed (its horizon) is not the one the last vacuum
-- (%(last_horizon)s) already met. A transaction left open keeps every dead
-- row younger than it; vacuuming again and again meanwhile only read the
-- table and its indexes. Sessions of roles this one may not see count as
-- no horizon (every vacuum goes ahead, as before).
with holders as (
    select a.backend_xmin as x from pg_stat_activity a
     where a.datname = current_database() and a.backend_xmin is not null
       and a.pid <> pg_backend_pid()
    union all
    select a.backend_xid from pg_stat_activity a
     where a.datname = current_database() and a.backend_xid is not null
       and a.pid <> pg_backend_pid()
    union all
    select r.xmin from pg_replication_slots r where r.xmin is not null
    union all
    select p.transaction from pg_prepared_xacts p
), horizon as (
    select (select h.x::text from holders h order by age(h.x) desc limit 1) as xid
)
select case when h.xid is null or h.xid is distinct from %(last_horizon)s::text
            then pg_try_advisory_lock(%(key)s) else false end as locked,
       h.xid as horizon
  from pg_stat_user_tables s
  join pg_class c on c.oid = s.relid
 cross join horizon h
 where s.relid = 'pgjobs.jobs'::regclass
   and s.n_dead_tup >= greatest(%(threshold)s, %(scale)s * s.n_live_tup)
   and (pg_has_role(c.relowner, 'USAGE')
        or (select r.rolsuper from pg_roles r where r.rolname = current_user))
   and not exists (select from pg_stat_progress_vacuum v where v.relid = s.relid);

-- name: jobs_vacuum
vacuum pgjobs.jobs;

-- name: jobs_vacuum_unlock
select pg_advisory_unlock(%(key)s);

-- name: job_prune_batch
-- One short transaction: up to batch_size finished jobs older than the cutoff,
-- and their history.
with doomed as (
    select id from pgjobs.jobs
     where pgjobs.is_finished(state)  -- inlined: matches jobs_finished_idx
       and finished_at < now() - make_interval(secs => %(older_than_seconds)s)
     order by finished_at
     limit %(batch_size)s
       for update skip locked
), history as (
    delete from pgjobs.job_events e using doomed d where e.job_id = d.id
)
delete from pgjobs.jobs j using doomed d where j.id = d.id
returning j.id;

-- name: prune_lock_try
-- One pruner at a time across every worker: a session lock held for the whole
-- run (its batches are separate transactions), released by prune_unlock or
-- by the session's end.
select pg_try_advisory_lock(hashtext('pgjobs.prune'));

-- name: prune_unlock
select pg_advisory_unlock(hashtext('pgjobs.prune'));
