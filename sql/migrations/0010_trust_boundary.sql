-- The trust boundary (issue 12): the database, not Python, guards every input,
-- and each role may write only what its work needs.
--
-- * Every input limit holds for every path (INSERT, INSERT ... SELECT, COPY,
--   the enqueue functions, any UPDATE): names are 1-200 characters without
--   control characters, a dedup key at most 1000 bytes, the payload at most
--   pgjobs.max_payload_bytes() measured uncompressed, at most 32 levels deep,
--   with no number of 300 or more integer digits (Python cannot read a
--   4,300-digit integer back), a timeout a statement_timeout can express with
--   the worker's margin, a run_at that is finite and a Python datetime, bounded
--   attempts and priority. The insert trigger says which limit a row broke
--   (PJ001); a CHECK constraint and an update trigger hold them for UPDATEs.
-- * Each NOTIFY payload is bounded by construction, whatever a row holds: the
--   text in it is cut to what the limits allow.
-- * pgjobs_app changes jobs only through the verbs. It may INSERT a job's input
--   columns (a plain INSERT stays a way to enqueue), and nothing else: no
--   UPDATE of jobs, no writes to job_events, dedup_keys or rate_windows. The
--   writes the verbs and the triggers make on its behalf (history, dedup keys,
--   the dependency cascade, cancel, retry) run as the tables' owner through
--   SECURITY DEFINER functions with a pinned search_path.
-- * Row-level security still scopes those functions to the caller: sees_all()
--   asks about the session's role (SET ROLE or the login), which a SECURITY
--   DEFINER function does not change, instead of current_user, which it does.
-- * History is written only by pgjobs: no role may INSERT or UPDATE job_events
--   (workers and admins keep DELETE, for prune). Only the owner and workers
--   write job_types. Admins may UPDATE only run_at, priority and queue of a
--   job (reschedule, reprioritize), which moves no job between states.

-- ---------------------------------------------------------------------------
-- Limits
-- ---------------------------------------------------------------------------

-- statement_timeout holds at most 2,147,483 s and the worker adds a 1 s margin.
create function pgjobs.max_timeout_seconds() returns int
language sql immutable parallel safe as $$ select 2000000 $$;

create function pgjobs.max_attempts_limit() returns int
language sql immutable parallel safe as $$ select 1000 $$;

-- A job type, queue or organization name: 1-200 characters, none of them a
-- control character (C0, DEL, C1), so a name prints as itself and its JSON
-- form in a NOTIFY is at most 4 bytes a character.
create function pgjobs.name_ok(name text) returns boolean
language sql immutable parallel safe as $$
    select length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f]'
$$;

-- Why a payload may not be stored, or NULL. Sizes are of the uncompressed
-- value: `payload || '{}'` hands back the payload itself, decompressed (a
-- value read from another table by INSERT ... SELECT may arrive compressed).
-- The depth test stops at level 32, so a payload nested 5,000 deep costs no
-- more than one nested 33 deep.
create function pgjobs.payload_problem(payload jsonb) returns text
language sql immutable parallel safe as $$
    select case
        when payload is null then null
        when jsonb_typeof(payload) <> 'object'
            then format('payload must be a JSON object, got %s', jsonb_typeof(payload))
        when pg_column_size(payload || '{}') > pgjobs.max_payload_bytes()
            then format('payload is %s bytes uncompressed, the limit is %s',
                        pg_column_size(payload || '{}'), pgjobs.max_payload_bytes())
        when jsonb_path_exists(payload, 'strict $.**{32}')
            then 'payload is nested deeper than 32 levels'
        when jsonb_path_exists(payload,
                 'strict $.** ? (@.type() == "number" && (@ >= 1e300 || @ <= -1e300))')
            then 'payload holds a number with 300 or more integer digits; store it as a string'
    end
$$;

-- Why a job's own values may not be stored, or NULL: the insert trigger's
-- clear message for what jobs_values_check also holds.
create function pgjobs.job_problem(j pgjobs.jobs) returns text
language sql immutable parallel safe as $$
    select case
        when not pgjobs.name_ok(j.job_type)
            then 'job_type must be 1-200 characters without control characters'
        when not pgjobs.name_ok(j.queue)
            then 'queue must be 1-200 characters without control characters'
        when j.organization is not null and not pgjobs.name_ok(j.organization)
            then 'organization must be 1-200 characters without control characters'
        when octet_length(j.dedup_key) > 1000
            then 'dedup_key must be at most 1000 bytes'
        when j.priority not between 0 and 3
            then format('priority must be 0-3, got %s', j.priority)
        when j.max_attempts not between 1 and pgjobs.max_attempts_limit()
            then format('max_attempts must be 1-%s, got %s', pgjobs.max_attempts_limit(),
                        j.max_attempts)
        when j.timeout_seconds not between 0 and pgjobs.max_timeout_seconds()
            then format('timeout_seconds must be 0-%s, got %s', pgjobs.max_timeout_seconds(),
                        j.timeout_seconds)
        when not (j.run_at > '0001-01-02 00:00:00+00' and j.run_at < '9999-12-30 00:00:00+00')
            then format('run_at must be a finite time between the years 1 and 9999, got %s',
                        j.run_at)
        when cardinality(j.depends_on) > 1000
            then 'depends_on may name at most 1000 jobs'
    end
$$;

-- One constraint (Postgres prepares each constraint for every statement that
-- writes the table, 0006), of cheap tests only: every claim and completion
-- evaluates it again. The characters of names and the payload's content are
-- checked by the insert trigger and, for an UPDATE that sets them, by
-- jobs_update_guard below. Added unchecked first, then checked: a database
-- whose old rows break a limit still migrates, and says so.
alter table pgjobs.jobs drop constraint jobs_values_check;
do $$
declare
    rule text := $r$check (
        priority between 0 and 3
        and max_attempts between 1 and pgjobs.max_attempts_limit()
        and timeout_seconds between 0 and pgjobs.max_timeout_seconds()
        and (progress is null or progress between 0 and 100)
        and (state <> 'running' or lease_token is not null)
        and attempt >= 0
        and run_at > '0001-01-02 00:00:00+00' and run_at < '9999-12-30 00:00:00+00'
        and length(job_type) between 1 and 200 and length(queue) between 1 and 200
        and (organization is null or length(organization) between 1 and 200)
        and (dedup_key is null or octet_length(dedup_key) <= 1000)
        and (depends_on is null or cardinality(depends_on) <= 1000))$r$;
begin
    execute 'alter table pgjobs.jobs add constraint jobs_values_check ' || rule || ' not valid';
    begin
        alter table pgjobs.jobs validate constraint jobs_values_check;
    exception when check_violation then
        raise notice 'pgjobs: some existing jobs break the input limits of 0010 and cannot be '
                     'updated until deleted: select id from pgjobs.jobs where '
                     'pgjobs.job_problem(jobs) is not null';
    end;
end
$$;

do $$
declare
    rule text := $r$check (
        pgjobs.name_ok(name) and pgjobs.name_ok(queue)
        and max_attempts between 1 and pgjobs.max_attempts_limit()
        and timeout_seconds <= pgjobs.max_timeout_seconds()
        and dedup_window_seconds <= 3650 * 86400
        and rate_period_seconds <= 3650 * 86400
        and retry_base_seconds <= 365 * 86400 and retry_cap_seconds <= 365 * 86400)$r$;
begin
    execute 'alter table pgjobs.job_types add constraint job_types_limits_check '
            || rule || ' not valid';
    begin
        alter table pgjobs.job_types validate constraint job_types_limits_check;
    exception when check_violation then
        raise notice 'pgjobs: some job types break the limits of 0010; fix them with the '
                     'type''s @pgjobs.job registration';
    end;
end
$$;

-- ---------------------------------------------------------------------------
-- Bounded notifications
-- ---------------------------------------------------------------------------

-- Postgres refuses a NOTIFY payload of 8,000 bytes or more, and the statement
-- with it. Whatever a row holds, this one is at most 1,200 + 1,200 bytes of
-- escaped text (200 characters of at most 6 bytes each) plus ids and numbers.
create or replace function pgjobs.state_event(id bigint, organization text, job_type text,
                                              state text, attempt int)
returns text language sql stable parallel safe as $$  -- stable, as concat is: inlined
    select concat('{"id":', id, ',"organization":',
                  coalesce(to_json(left(organization, 200))::text, 'null'),
                  ',"job_type":', to_json(left(job_type, 200))::text,
                  ',"state":', to_json(left(state, 20))::text,
                  ',"attempt":', attempt, '}')
$$;

-- The pgjobs_progress payload, bounded the same way (progress is 0-100).
create function pgjobs.progress_event(id bigint, organization text, progress numeric,
                                      state text)
returns text language sql stable parallel safe as $$
    select concat('{"id":', id, ',"organization":',
                  coalesce(to_json(left(organization, 200))::text, 'null'),
                  ',"progress":', coalesce(round(progress, 6)::text, 'null'),
                  ',"state":', to_json(left(state, 20))::text, '}')
$$;

-- ---------------------------------------------------------------------------
-- Whose rights
-- ---------------------------------------------------------------------------

-- The role the session acts as: SET ROLE's, else the login's. Unlike
-- current_user, a SECURITY DEFINER function does not change it (and SET ROLE
-- is refused inside one), so the definer functions below see what their
-- caller sees.
create function pgjobs.session_role() returns name
language sql stable parallel safe as $$
    select case when current_setting('role') = 'none' then session_user
                else current_setting('role')::name end
$$;

create or replace function pgjobs.sees_all() returns boolean
language sql stable as $$
    select coalesce(current_setting('pgjobs.organization', true), '') = ''
       and (pg_has_role(pgjobs.session_role(), 'pgjobs_worker', 'USAGE')
            or pg_has_role(pgjobs.session_role(), 'pgjobs_admin', 'USAGE'))
$$;

-- ---------------------------------------------------------------------------
-- The limits, checked before anything else of an insert happens
-- ---------------------------------------------------------------------------

-- A trigger of its own rather than a new version of jobs_before_insert (which
-- other migrations restate): triggers of one event fire in name order, so
-- jobs_accept_input runs first, then jobs_authorize_insert (0011, no scope),
-- then jobs_before_insert, which sends the wake-up NOTIFY and takes the dedup
-- key only for a row that met every limit. Values left NULL come from the job
-- type, whose own constraint holds them to the same limits.
-- The trigger's WHEN clause is the test, evaluated without entering PL/pgSQL
-- (a trigger function call per row cost a bulk enqueue a fifth more CPU);
-- the function runs only to say which limit a row broke.
create function pgjobs.jobs_accept_input() returns trigger
language plpgsql as $$
begin
    perform pgjobs.invalid_job(coalesce(
        pgjobs.job_problem(new),
        pgjobs.payload_problem(new.payload),
        -- Left NULL, the organization is the session's scope.
        'organization must be 1-200 characters without control characters'));
    return new;
end
$$;

create trigger jobs_accept_input
    before insert on pgjobs.jobs
    for each row
    when (not pgjobs.name_ok(coalesce(new.organization, pgjobs.current_organization()))
          or not pgjobs.name_ok(new.queue)
          or octet_length(new.dedup_key) > 1000
          or new.priority not between 0 and 3
          or new.max_attempts not between 1 and pgjobs.max_attempts_limit()
          or new.timeout_seconds not between 0 and pgjobs.max_timeout_seconds()
          or not (new.run_at > '0001-01-02 00:00:00+00' and new.run_at < '9999-12-30 00:00:00+00')
          or cardinality(new.depends_on) > 1000
          or jsonb_typeof(new.payload) <> 'object'
          or pg_column_size(new.payload || '{}') > pgjobs.max_payload_bytes()
          or jsonb_path_exists(new.payload, 'strict $.**{32}')
          or jsonb_path_exists(new.payload,
                 'strict $.** ? (@.type() == "number" && (@ >= 1e300 || @ <= -1e300))'))
    execute function pgjobs.jobs_accept_input();

-- An UPDATE that sets a name or the payload meets the insert's limits (the
-- claim and the completions set neither, so they never run this).
create function pgjobs.jobs_update_guard() returns trigger
language plpgsql as $$
declare
    problem text := coalesce(pgjobs.job_problem(new), pgjobs.payload_problem(new.payload));
begin
    if problem is not null then
        perform pgjobs.invalid_job(problem);
    end if;
    return new;
end
$$;

create trigger jobs_update_guard
    before update of payload, job_type, queue, organization, dedup_key on pgjobs.jobs
    for each row
    when (old.payload is distinct from new.payload or old.job_type is distinct from new.job_type
          or old.queue is distinct from new.queue
          or old.organization is distinct from new.organization
          or old.dedup_key is distinct from new.dedup_key)
    execute function pgjobs.jobs_update_guard();

-- ---------------------------------------------------------------------------
-- What the verbs write on the app's behalf, written as the owner
-- ---------------------------------------------------------------------------

-- ALTER, not a restatement: the bodies stay those of whichever migration
-- restates them. jobs_before_insert takes the dedup key and locks parents FOR
-- SHARE for an app's INSERT; jobs_after_update writes history, dedup flags and
-- the dependency cascade (see also 0045, after 0020 restated it);
-- jobs_after_delete releases dedup keys (prune by an admin).
alter function pgjobs.jobs_before_insert() security definer
    set search_path = pg_catalog, pg_temp;
alter function pgjobs.jobs_after_update() security definer
    set search_path = pg_catalog, pg_temp;
alter function pgjobs.jobs_after_delete() security definer
    set search_path = pg_catalog, pg_temp;
-- cancel and retry are the app's only way to change a job. Row-level security
-- still scopes them to what the caller's session sees (sees_all above).
alter function pgjobs.cancel(bigint) security definer set search_path = pg_catalog, pg_temp;
alter function pgjobs.retry(bigint) security definer set search_path = pg_catalog, pg_temp;

-- The definer functions run as pgjobs_owner, whom FORCE ROW LEVEL SECURITY
-- binds, never as the (often superuser) role that ran the migration.
do $$
declare
    f text;
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; definer functions keep their owner',
            current_user;
        return;
    end if;
    foreach f in array array['pgjobs.jobs_before_insert()', 'pgjobs.jobs_after_update()',
                             'pgjobs.jobs_after_delete()', 'pgjobs.cancel(bigint)',
                             'pgjobs.retry(bigint)'] loop
        execute format('alter function %s owner to pgjobs_owner', f);
    end loop;
end
$$;

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------

-- Applications: read their organization's rows; enqueue by INSERT of a job's
-- input columns (the trigger draws the id and fills the rest); change jobs
-- only through pgjobs.cancel and pgjobs.retry.
revoke insert, update on pgjobs.jobs from pgjobs_app;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_app;
revoke insert, update, delete on pgjobs.job_events, pgjobs.dedup_keys, pgjobs.rate_windows,
                                 pgjobs.job_types
    from pgjobs_app;
revoke usage on sequence pgjobs.jobs_id_seq, pgjobs.job_events_id_seq from pgjobs_app;

-- History is written by pgjobs alone (its definer functions); prune deletes it.
revoke insert, update on pgjobs.job_events from pgjobs_worker, pgjobs_admin;
-- Dedup keys are the triggers' (prune releases them through jobs_after_delete).
revoke insert, update, delete on pgjobs.dedup_keys from pgjobs_worker, pgjobs_admin;
-- Job types: the owner (migrations) and workers registering their own types.
revoke insert, update, delete on pgjobs.job_types from pgjobs_admin;
-- Admins move no job between states by hand: retry and cancel do that. UPDATE
-- of run_at also lets prune lock the rows it deletes (FOR UPDATE).
revoke update on pgjobs.jobs from pgjobs_admin;
grant update (run_at, priority, queue) on pgjobs.jobs to pgjobs_admin;
revoke insert on pgjobs.jobs from pgjobs_admin;
grant insert (id, job_type, payload, organization, queue, priority, run_at, dedup_key,
              depends_on, max_attempts, timeout_seconds)
    on pgjobs.jobs to pgjobs_admin;
