-- The control verbs an application or an operator calls on one job.

-- How often cancel and retry try again when a concurrent transaction moved
-- their job to another partition (0060): in READ COMMITTED once is enough, in
-- REPEATABLE READ every try fails and the error reaches the caller.
create function pgjobs.moved_row_tries() returns int
language sql immutable parallel safe as $$ select 3 $$;

-- Cancel: one conditional UPDATE, guarded by the type's cancel policy, so no
-- surface (SQL, Python, CLI, HTTP) can skip the check and no concurrent change
-- can slip between a check and the update. A running job is marked and its
-- worker told; anything else unfinished ends canceled at once. Runs as the
-- owner, and row-level security (by the session's role) decides which jobs
-- exist for the caller.
create function pgjobs.cancel(id bigint) returns text
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

-- Retry: a dead or canceled job goes back to queued with its attempts reset.
create function pgjobs.retry(id bigint) returns text
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
