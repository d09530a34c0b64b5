-- The roles pgjobs runs as, and the scope of a session.
--
-- Roles belong to the whole cluster, not to one database, so every database
-- migrated on a server shares them; creating them tolerates their existing
-- already, and a concurrent migrate of another database doing the same (the
-- loser of that race retries and finds them).
--
--   pgjobs_owner   owns the tables; bound by row-level security like a tenant
--                  (FORCE ROW LEVEL SECURITY), so owning is not seeing.
--   pgjobs_app     applications: sees only the organization its transaction
--                  is scoped to (pgjobs.tenant), nothing when none is set.
--   pgjobs_worker  workers: every organization; claims and runs jobs.
--   pgjobs_admin   operators: every organization; metrics, dead letter, retry,
--                  prune.
--
-- None can log in or has BYPASSRLS: grant them to your login roles
-- (GRANT pgjobs_app TO my_service).
do $$
declare
    attempt int;
    r text;
begin
    for attempt in 1..20 loop
        begin
            foreach r in array array['pgjobs_owner', 'pgjobs_app', 'pgjobs_worker',
                                     'pgjobs_admin'] loop
                if not exists (select from pg_roles where rolname = r) then
                    execute format('create role %I nologin nobypassrls', r);
                end if;
            end loop;
            return;
        exception when unique_violation or duplicate_object or internal_error then
            -- Another database's migrate created the same role at the same
            -- moment ("tuple concurrently updated" is internal_error).
            if attempt = 20 then
                raise;
            end if;
            perform pg_sleep(0.05 * attempt);
        end;
    end loop;
end
$$;

-- The organization this transaction is scoped to (pgjobs.tenant sets it
-- transaction-locally); NULL when none is.
create function pgjobs.current_organization() returns text
language sql stable as $$
    select nullif(current_setting('pgjobs.organization', true), '')
$$;

-- Does this session, as it stands, see every organization? Only a worker or
-- an admin (or a superuser, whom row-level security never binds) whose
-- transaction is not scoped to one organization. Scoping binds every role:
-- inside a job's own transaction, which the worker scopes to the job's
-- organization, the handler sees that organization only. Everyone else sees
-- the organization its transaction is scoped to, and nothing without one.
-- The one rule the row-level security policies (90_security.sql) and the
-- insert trigger share.
-- The role the session acts as: SET ROLE's, else the login's. Unlike
-- current_user, a SECURITY DEFINER function does not change it (and SET ROLE
-- is refused inside one), so the definer functions below see what their
-- caller sees.
create function pgjobs.session_role() returns name
language sql stable parallel safe as $$
    select case when current_setting('role') = 'none' then session_user
                else current_setting('role')::name end
$$;

-- Asked about the session's role (pgjobs.session_role), not current_user: the
-- SECURITY DEFINER functions that write for the app (90_security.sql) then see
-- exactly what their caller sees.
create function pgjobs.sees_all() returns boolean
language sql stable as $$
    select coalesce(current_setting('pgjobs.organization', true), '') = ''
       and (pg_has_role(pgjobs.session_role(), 'pgjobs_worker', 'USAGE')
            or pg_has_role(pgjobs.session_role(), 'pgjobs_admin', 'USAGE'))
$$;

-- Who asked: what the session put in pgjobs.actor (transaction-locally, as
-- pgjobs.tenant does for the organization), else the login role. pgjobs
-- authenticates no one: an application that sets pgjobs.actor vouches for it,
-- as it vouches for the organization it scopes to. Jobs record it as
-- created_by, history rows as actor, cancel as canceled_by.
create function pgjobs.current_actor() returns text
language sql stable as $$
    select coalesce(nullif(current_setting('pgjobs.actor', true), ''), session_user::text)
$$;

-- Does the current session act as an admin for ownership checks? Members of
-- pgjobs_admin, and superusers (whom row-level security never binds either).
-- By the session's role: cancel runs as the owner (SECURITY DEFINER).
create function pgjobs.acts_as_admin() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_has_role(pgjobs.session_role(), 'pgjobs_admin', 'USAGE')
        or coalesce((select r.rolsuper from pg_roles r where r.rolname = pgjobs.session_role()),
                    false)
$$;
