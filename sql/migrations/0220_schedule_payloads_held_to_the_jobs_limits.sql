-- A schedule's payload is held to the jobs' own payload limits
-- (pgjobs.payload_problem: a JSON object, at most max_payload_bytes
-- uncompressed, nested at most 32 deep, no number of 300 digits or more).
-- Before, its write trigger checked only the first two, so a schedule whose
-- payload no job could carry was accepted and failed at every tick.

create or replace function pgjobs.schedules_before_write() returns trigger
language plpgsql as $$
declare
    scope   text := pgjobs.current_organization();
    t       pgjobs.job_types;
    problem text;
begin
    if tg_op = 'INSERT' then
        new.organization := coalesce(new.organization, scope);
    end if;
    -- As for jobs (0011_client_contract.sql): no scope is PJ004
    -- (pgjobs.no_organization), another organization is insufficient_privilege.
    if scope is null and not pgjobs.sees_all() then
        perform pgjobs.no_organization();
    end if;
    if (new.organization is distinct from scope or new.organization is null)
       and not pgjobs.sees_all() then
        raise exception 'pgjobs: organization % is outside this session''s scope',
            coalesce(quote_literal(new.organization), 'NULL (system)')
            using errcode = 'insufficient_privilege';
    end if;
    if new.name is null or new.name = '' or length(new.name) > 200 then
        perform pgjobs.invalid_job('a schedule name is 1-200 characters');
    end if;
    if new.organization = '' then
        perform pgjobs.invalid_job('organization must not be empty (NULL is a system schedule)');
    end if;
    select * into t from pgjobs.job_types where name = new.job_type;
    if not found then
        perform pgjobs.invalid_job(format('unknown job type %L', new.job_type));
    end if;
    -- The jobs' own payload limits (pgjobs.payload_problem): every fire
    -- enqueues this payload, so one they refuse is refused here, once.
    new.payload := coalesce(new.payload, '{}');
    problem := pgjobs.payload_problem(new.payload);
    if problem is not null then
        perform pgjobs.invalid_job(problem);
    end if;
    new.timezone := coalesce(new.timezone, 'UTC');
    if tg_op = 'INSERT' or new.cron is distinct from old.cron
       or new.timezone is distinct from old.timezone then
        perform pgjobs.check_timezone(new.timezone);
        -- A new rule starts after now, and never at or before a tick already fired.
        new.next_fire_at := pgjobs.cron_next(new.cron, new.timezone,
                                             greatest(now(), new.last_fired_at));
        if new.next_fire_at is null then
            perform pgjobs.invalid_job(format('cron expression %L never fires', new.cron));
        end if;
    end if;
    if tg_op = 'UPDATE' then
        new.created_at := old.created_at;
    end if;
    new.updated_at := now();
    return new;
end
$$;
