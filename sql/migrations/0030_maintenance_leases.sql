-- Maintenance turns that no stranger can block (issue 12 item 7), and that work
-- behind a transaction-mode pooler (issue 13 item 1).
--
-- Rescue, prune and vacuum used to take their turn by advisory lock. Any role
-- may take any advisory lock key, grants or not, so a stranger holding the keys
-- stopped rescues, prunes and vacuums for everyone; and a session advisory lock
-- taken through PgBouncer in transaction mode is taken on one server connection
-- and released (or not) on another. A turn is now a row of this table: taken
-- by a guarded upsert (free, expired, or already the taker's), renewed by the
-- same statement, released by its holder, and simply expiring when the holder
-- dies. Only pgjobs_worker may write it; a role without grants can neither
-- take a turn nor lock the row.
create table pgjobs.maintenance_leases (
    duty       text primary key check (duty in ('rescue', 'prune', 'vacuum')),
    holder     text check (length(holder) <= 300),
    expires_at timestamptz,
    check ((holder is null) = (expires_at is null))
);

comment on table pgjobs.maintenance_leases is
    'Whose turn it is at each maintenance duty (rescue, prune, vacuum), until when.';

do $$
begin
    if pg_has_role('pgjobs_owner', 'MEMBER') then
        alter table pgjobs.maintenance_leases owner to pgjobs_owner;
    end if;
end
$$;

revoke all on pgjobs.maintenance_leases from public;
grant select, insert, update on pgjobs.maintenance_leases to pgjobs_worker;
grant select on pgjobs.maintenance_leases to pgjobs_admin;
