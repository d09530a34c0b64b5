-- Job ownership (SPEC 6): who created a job, who made each state change, and
-- who may cancel it.
--
-- The actor is what the session put in pgjobs.actor (transaction-locally, as
-- pgjobs.tenant does for the organization), else the login role; it is the same
-- pgjobs.current_actor() that cancel already records in canceled_by. pgjobs
-- authenticates no one: an application that sets pgjobs.actor vouches for it,
-- as it vouches for the organization it scopes to.

-- Added without a default first, so jobs and events that existed before this
-- migration keep NULL ("not recorded") instead of the migrating role's name.
alter table pgjobs.jobs add column created_by text;
alter table pgjobs.jobs alter column created_by set default pgjobs.current_actor();

-- A column default, not a change to the state-change trigger: every writer of
-- history (the trigger, whatever later migrations make of it) records the actor
-- of the transaction that moved the job, and the hot path pays one setting read.
alter table pgjobs.job_events add column actor text;
alter table pgjobs.job_events alter column actor set default pgjobs.current_actor();

-- Who may cancel a job of this type: any member of its organization (the
-- default), or only the actor who created it (and pgjobs_admin).
alter table pgjobs.job_types
    add column cancel_policy text not null default 'organization'
        constraint job_types_cancel_policy_check check (cancel_policy in ('organization', 'creator'));

-- Does the current session act as an admin for ownership checks? Members of
-- pgjobs_admin, and superusers (whom row-level security never binds either).
create function pgjobs.acts_as_admin() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_has_role(current_user, 'pgjobs_admin', 'USAGE')
        or coalesce((select r.rolsuper from pg_roles r where r.rolname = current_user), false)
$$;

-- Cancel: still one conditional UPDATE, now also guarded by the type's cancel
-- policy, so no surface (SQL, Python, CLI, HTTP) can skip the check and no
-- concurrent change can slip between a check and the update. Runs with the
-- caller's rights: row-level security decides which jobs exist for it.
create or replace function pgjobs.cancel(id bigint) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    new_state text;
    old_state text;
    policy    text;
    creator   text;
begin
    update pgjobs.jobs j
       set state = case when j.state = 'running' then 'running' else 'canceled' end,
           cancel_requested_at = case when j.state = 'running' then now() end,
           finished_at = case when j.state = 'running' then null else now() end,
           canceled_by = pgjobs.current_actor()
      from pgjobs.job_types t
     where j.id = cancel.id
       and t.name = j.job_type
       and j.state in ('waiting', 'queued', 'retrying', 'running')
       and j.cancel_requested_at is null
       and (t.cancel_policy = 'organization'
            or j.created_by is not distinct from pgjobs.current_actor()
            or pgjobs.acts_as_admin())
    returning j.state into new_state;
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
