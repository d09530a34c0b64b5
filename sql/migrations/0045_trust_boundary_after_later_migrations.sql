-- The trust boundary (issue 12) for what 0012, 0013 and 0020 made after 0010.
--
-- (Number not assigned to the trust branch: the lead may renumber this file,
-- as long as it runs after 0020 and every other migration that restates
-- cancel, trigger_schedule, schedule_fire or jobs_after_update.)
--
-- 0010 made cancel SECURITY DEFINER, so pgjobs_app, which may not UPDATE jobs
-- itself, cancels through it; 0012 (job ownership) then replaced the function
-- whole, and CREATE OR REPLACE drops SECURITY DEFINER. On a fresh install 0012
-- runs after 0010, so the flag is set again here.
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

-- The state-change trigger writes history, dedup flags, the dependency
-- cascade and the state relay's outbox (0020) for every session that changes
-- a state, admins' included (an UPDATE of run_at runs it too, and the INSERT
-- into job_events is checked whether or not it adds a row): as the owner.
-- 0020 restated it, and CREATE OR REPLACE drops SECURITY DEFINER.
alter function pgjobs.jobs_after_update() security definer
    set search_path = pg_catalog, pg_temp;

-- Schedules (0013) write a history row for each job they make ("fired by
-- schedule ..."), and no role but the owner may write history: both run as the
-- owner. Row-level security still scopes them to the calling session, and
-- schedule_fire stays the workers' and admins' alone.
alter function pgjobs.trigger_schedule(text, text) security definer
    set search_path = pg_catalog, pg_temp;
alter function pgjobs.schedule_fire(jsonb, timestamptz) security definer
    set search_path = pg_catalog, pg_temp;

do $$
declare
    f text;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; definer functions keep their owner',
            current_user;
        return;
    end if;
    foreach f in array array['pgjobs.cancel(bigint)', 'pgjobs.jobs_after_update()',
                             'pgjobs.trigger_schedule(text, text)',
                             'pgjobs.schedule_fire(jsonb, timestamptz)'] loop
        execute format('alter function %s owner to pgjobs_owner', f);
    end loop;
end
$$;
