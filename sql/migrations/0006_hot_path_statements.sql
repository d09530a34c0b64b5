-- Fewer steps per statement on the hot paths, with the same guarantees.
--
-- * The claim's statements are planned once per session, not on every call.
--   PL/pgSQL keeps a plan per statement, but a statement with parameters is
--   planned afresh for its values on each call while the planner judges that
--   cheaper than one generic plan, which it does for the claim: planning was
--   three quarters of a 10-job claim's backend time (1.35 ms of CPU, 0.32 ms
--   with generic plans). The generic plan is the right one here, since the
--   claim may only walk jobs_runnable_idx (0005) and take() finds rows by id.
-- * No JIT compilation in the claim and the state-change trigger. Once the
--   jobs table holds a few million rows, the planner's cost estimates for
--   these short statements pass jit_above_cost, and compiling them took two
--   fifths of the workers' database time in a sustained run: the throughput
--   fell by a third once the table had grown. (Worker sessions turn JIT off
--   as well, for the statements they send themselves.)
-- * One CHECK constraint instead of five: Postgres reads and prepares each
--   constraint of a table for every statement that writes it, which was a
--   tenth of a single-job enqueue. jobs_state_check stays as it is.
-- * The wake-up NOTIFY is sent by the insert trigger as each queued row is
--   accepted, which spares every INSERT a statement trigger and the copy of
--   its rows into a transition table. The trigger is restated whole below
--   (a forward migration cannot edit 0002); it also reads the session's
--   organization once instead of three times.

alter function pgjobs.claim(text, text[], int, double precision, timestamptz)
    set plan_cache_mode = force_generic_plan
    set jit = off;
alter function pgjobs.take(text, bigint[], double precision, timestamptz)
    set plan_cache_mode = force_generic_plan
    set jit = off;
-- Every UPDATE of jobs runs this trigger, from any session (a worker's, an
-- operator's cancel or retry).
alter function pgjobs.jobs_after_update() set jit = off;

alter table pgjobs.jobs
    drop constraint jobs_priority_check,
    drop constraint jobs_max_attempts_check,
    drop constraint jobs_timeout_check,
    drop constraint jobs_progress_check,
    drop constraint jobs_running_has_lease,
    add constraint jobs_values_check check (
        priority between 0 and 3
        and max_attempts >= 1
        and timeout_seconds >= 0
        and (progress is null or progress between 0 and 100)
        and (state <> 'running' or lease_token is not null));

drop trigger jobs_after_insert on pgjobs.jobs;
drop function pgjobs.jobs_after_insert();

create or replace function pgjobs.jobs_before_insert() returns trigger
language plpgsql as $$
declare
    t        pgjobs.job_types;
    n_given  int;
    n_found  int;
    n_done   int;
    failed   bigint;
    failed_state text;
    scope    text := pgjobs.current_organization();
begin
    select * into t from pgjobs.job_types where name = new.job_type;
    if not found then
        perform pgjobs.invalid_job(format('unknown job type %L', new.job_type));
    end if;
    if not t.enabled then
        perform pgjobs.invalid_job(format('job type %L is disabled', new.job_type));
    end if;
    if new.state is distinct from 'queued' then
        perform pgjobs.invalid_job(format('a new job starts queued, not %L', new.state));
    end if;

    new.organization    := coalesce(new.organization, scope);
    -- A scoped session writes its own organization's jobs only. Checked before
    -- any dedup key or dependency is read, so naming another organization
    -- fails the same way whatever that organization holds.
    if new.organization is distinct from scope or new.organization is null then
        if not pgjobs.sees_all() then
            raise exception '%', case when scope is null
                then 'pgjobs: this session is scoped to no organization (see pgjobs.tenant)'
                else format('pgjobs: organization %L is outside this session''s scope',
                            new.organization) end
                using errcode = 'insufficient_privilege';
        end if;
    end if;
    new.queue           := coalesce(new.queue, t.queue);
    new.priority        := coalesce(new.priority, t.priority);
    new.max_attempts    := coalesce(new.max_attempts, t.max_attempts);
    new.timeout_seconds := coalesce(new.timeout_seconds, t.timeout_seconds);
    new.payload         := coalesce(new.payload, '{}');
    new.run_at          := coalesce(new.run_at, now());
    new.created_at      := now();
    new.attempt         := 0;

    if new.priority not between 0 and 3 then
        perform pgjobs.invalid_job(format('priority must be 0-3, got %s', new.priority));
    end if;
    if new.max_attempts < 1 then
        perform pgjobs.invalid_job(format('max_attempts must be at least 1, got %s', new.max_attempts));
    end if;
    if new.timeout_seconds < 0 then
        perform pgjobs.invalid_job(format('timeout_seconds must be >= 0, got %s', new.timeout_seconds));
    end if;
    if new.organization = '' then
        perform pgjobs.invalid_job('organization must not be empty (NULL is a system job)');
    end if;
    if new.queue = '' then
        perform pgjobs.invalid_job('queue must not be empty');
    end if;
    if jsonb_typeof(new.payload) <> 'object' then
        perform pgjobs.invalid_job(format('payload must be a JSON object, got %s',
                                          jsonb_typeof(new.payload)));
    end if;
    if pg_column_size(new.payload) > pgjobs.max_payload_bytes() then
        perform pgjobs.invalid_job(format('payload is %s bytes, the limit is %s',
                                          pg_column_size(new.payload), pgjobs.max_payload_bytes()));
    end if;

    -- Dependencies: parents must exist in the same organization. FOR SHARE holds
    -- them still until we commit, so a parent cannot finish unseen in between.
    if new.depends_on is not null and cardinality(new.depends_on) > 0 then
        select array_agg(distinct d order by d) into new.depends_on
          from unnest(new.depends_on) d;
        n_given := cardinality(new.depends_on);
        select count(*), count(*) filter (where p.state = 'completed'),
               min(p.id) filter (where p.state in ('dead', 'canceled'))
          into n_found, n_done, failed
          from (select j.id, j.state from pgjobs.jobs j
                 where j.id = any(new.depends_on)
                   and j.organization is not distinct from new.organization
                   for share) p;
        if n_found < n_given then
            perform pgjobs.invalid_job('depends_on names a job that does not exist');
        end if;
        if failed is not null then
            select state into failed_state from pgjobs.jobs where id = failed;
            new.state       := 'canceled';
            new.canceled_by := 'dependency';
            new.last_error  := format('dependency %s ended %s', failed, failed_state);
            new.finished_at := now();
        elsif n_done < n_given then
            new.state := 'waiting';
        end if;
    else
        new.depends_on := null;
    end if;

    if new.dedup_key is null and t.dedup_by_payload then
        new.dedup_key := pgjobs.payload_key(new.payload);
    end if;
    if new.dedup_key is not null then
        insert into pgjobs.dedup_keys as d
               (organization, job_type, dedup_key, job_id, active, expires_at)
        values (coalesce(new.organization, ''), new.job_type, new.dedup_key, new.id,
                new.state not in ('completed', 'dead', 'canceled'),
                now() + make_interval(secs => t.dedup_window_seconds))
        on conflict (organization, job_type, dedup_key) do update
               set job_id = excluded.job_id, active = excluded.active,
                   expires_at = excluded.expires_at
             where not d.active and d.expires_at <= now();
        if not found then
            return null;  -- a duplicate: write nothing
        end if;
    end if;

    -- Wake the queue's workers. Postgres sends one notification per distinct
    -- payload per transaction, so a bulk insert still wakes each queue once.
    if new.state = 'queued' then
        perform pg_notify('pgjobs_wakeup', new.queue);
    end if;
    return new;
end
$$;
