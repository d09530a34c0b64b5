-- Maintenance: the workers' vacuum of the jobs table and retention.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: jobs_vacuum_turn
-- Takes the vacuum turn (see maintenance_lease_take) when jobs_active has
-- dead tuples to clear, this role may vacuum it, and nobody is vacuuming it
-- already (autovacuum included). A vacuum reads every index whole, so a bigger
-- table waits for more dead tuples (a share of its live ones): its cost per job
-- stays flat as it grows.
-- And only when it can remove something: the oldest transaction that holds
-- back what may be removed (its horizon) is not the one the last vacuum
-- (%(last_horizon)s) already met. A transaction left open keeps every dead
-- row younger than it; vacuuming again and again meanwhile only read the
-- table and its indexes. Sessions of roles this one may not see count as no
-- horizon (every vacuum goes ahead). Returns the horizon met.
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
insert into pgjobs.maintenance_leases as l (duty, holder, expires_at)
select 'vacuum', %(holder)s, coalesce(%(now)s, now()) + make_interval(secs => %(seconds)s)
  from pg_stat_user_tables s
  join pg_class c on c.oid = s.relid
 cross join horizon h
 where s.relid = 'pgjobs.jobs_active'::regclass
   and s.n_dead_tup >= greatest(%(threshold)s, %(scale)s * s.n_live_tup)
   and (pg_has_role(c.relowner, 'USAGE')
        or (select r.rolsuper from pg_roles r where r.rolname = current_user))
   and not exists (select from pg_stat_progress_vacuum v where v.relid = s.relid)
   and (h.xid is null or h.xid is distinct from %(last_horizon)s::text)
on conflict (duty) do update
   set holder = excluded.holder, expires_at = excluded.expires_at
 where l.holder is null or l.holder = excluded.holder
       or l.expires_at < coalesce(%(now)s, now())
returning true, (select h.xid from horizon h);

-- name: jobs_vacuum
-- The unfinished jobs: the partition claims and completions leave dead rows in.
-- Without truncating the empty pages at its end: that needs the table's
-- ACCESS EXCLUSIVE lock, which every claim and completion keep from it, and
-- VACUUM waits up to 5 s for it, the worker that runs it claiming nothing
-- meanwhile; the pages are filled again by the next jobs anyway.
vacuum (truncate false) pgjobs.jobs_active;

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
delete from pgjobs.jobs j using doomed d
 where j.id = d.id and pgjobs.is_finished(j.state)  -- the finished partitions only
returning j.id;

-- name: partitions_ensure
-- Makes the partitions of finished jobs and of history of this period and the
-- next few.
select pgjobs.partitions_ensure(%(now)s);

-- name: partition_drop_oldest
-- Drops the oldest partition of finished jobs wholly older than the cutoff,
-- and the partitions of history of its period and before; how many jobs it
-- held (NULL: none is that old).
select pgjobs.partition_drop_oldest(now() - make_interval(secs => %(older_than_seconds)s));

-- name: maintenance_lease_take
-- Takes the turn at a duty for `seconds`, or renews it: the duty is free, its
-- holder's lease expired (a holder that dies releases its turn so), or the
-- taker holds it already. A row only pgjobs_worker may write, not an advisory
-- lock (any role may hold any key), and no session state: it works the same
-- through a transaction-mode pooler. True when the turn is the taker's.
insert into pgjobs.maintenance_leases as l (duty, holder, expires_at)
values (%(duty)s, %(holder)s, coalesce(%(now)s, now()) + make_interval(secs => %(seconds)s))
on conflict (duty) do update
   set holder = excluded.holder, expires_at = excluded.expires_at
 where l.holder is null or l.holder = excluded.holder
       or l.expires_at < coalesce(%(now)s, now())
returning true;

-- name: maintenance_lease_release
-- Gives the turn back at once (a clean exit); only its holder can.
update pgjobs.maintenance_leases
   set holder = null, expires_at = null
 where duty = any(%(duties)s::text[]) and holder = %(holder)s;
