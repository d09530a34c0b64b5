-- pgjobs.cancel as the owner again (issue 12), after 0012 restated it.
--
-- 0010 made cancel SECURITY DEFINER, so pgjobs_app, which may not UPDATE jobs
-- itself, cancels through it; 0012 (job ownership) then replaced the function
-- whole, and CREATE OR REPLACE drops SECURITY DEFINER. On a fresh install 0012
-- runs after 0010, so the flag is set again here. (Number not assigned to the
-- trust branch: the lead may renumber it, as long as it runs after 0012.)
--
-- Inside a definer function current_user is the owner, so "is the caller an
-- admin" asks about the session's role (pgjobs.session_role, 0010), as
-- sees_all() does.

create or replace function pgjobs.acts_as_admin() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_has_role(pgjobs.session_role(), 'pgjobs_admin', 'USAGE')
        or coalesce((select r.rolsuper from pg_roles r where r.rolname = pgjobs.session_role()),
                    false)
$$;

alter function pgjobs.cancel(bigint) security definer set search_path = pg_catalog, pg_temp;

do $$
begin
    if pg_has_role('pgjobs_owner', 'MEMBER') then
        alter function pgjobs.cancel(bigint) owner to pgjobs_owner;
    end if;
end
$$;
