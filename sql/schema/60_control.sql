-- The control verbs an application or an operator calls on one job.

-- Who asked: the application may name itself in pgjobs.actor.
create function pgjobs.current_actor() returns text
language sql stable as $$
    select coalesce(nullif(current_setting('pgjobs.actor', true), ''), session_user::text)
$$;

-- Cancel: one conditional UPDATE. A running job is marked and its worker told;
-- anything else unfinished ends canceled at once.
create function pgjobs.cancel(id bigint) returns text
language plpgsql as $$
declare
    new_state text;
    old_state text;
begin
    update pgjobs.jobs j
       set state = case when j.state = 'running' then 'running' else 'canceled' end,
           cancel_requested_at = case when j.state = 'running' then now() end,
           finished_at = case when j.state = 'running' then null else now() end,
           canceled_by = pgjobs.current_actor()
     where j.id = cancel.id
       and not pgjobs.is_finished(j.state)
       and j.cancel_requested_at is null
    returning j.state into new_state;
    if new_state = 'running' then
        perform pg_notify('pgjobs_cancel', cancel.id::text);
    elsif new_state is null then
        select j.state into old_state from pgjobs.jobs j where j.id = cancel.id;
        if old_state is null then
            raise exception 'pgjobs: no job %', cancel.id using errcode = 'PJ002';
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
language plpgsql as $$
declare
    new_state text;
    old_state text;
begin
    update pgjobs.jobs j
       set state = 'queued', attempt = 0, run_at = now(), finished_at = null,
           canceled_by = null, cancel_requested_at = null, result = null
     where j.id = retry.id and j.state in ('dead', 'canceled')
    returning j.state into new_state;
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
