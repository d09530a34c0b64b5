-- Enqueue: one trigger serves pgjobs.enqueue(), pgjobs.enqueue_jobs() and a
-- plain INSERT alike; a bulk enqueue of plain jobs is checked and completed
-- set-based instead (pgjobs.enqueue_plain), and its rows skip that trigger.

-- True on a row whose enqueue checks are done: pgjobs.enqueue_plain sets it
-- on the rows it checked and completed before inserting them, and the
-- insert trigger below skips such rows; jobs_before_insert sets it on every row it
-- lets through, so both paths store the same row. No tenant can set it on an
-- INSERT: pgjobs_app and pgjobs_admin hold INSERT (and so COPY) on a list of
-- columns without it (90_security.sql), and Postgres enforces column
-- privileges, so their rows always get the default, NULL. Only the owner and
-- the workers, who may write any column of jobs anyway, can. A column rather than a setting: a session can set any
-- setting with set_config.
alter table pgjobs.jobs add column prechecked boolean;

-- Limits on what a payload may be (bytes of its jsonb form).
create function pgjobs.max_payload_bytes() returns int
language sql immutable as $$ select 1048576 $$;

-- The dedup key of a job type with dedup_by_payload: a hash of the payload's
-- canonical jsonb text. One definition for the trigger and the lookups.
create function pgjobs.payload_key(payload jsonb) returns text
language sql immutable parallel safe as $$
    select encode(sha256(convert_to(coalesce(payload, '{}')::text, 'UTF8')), 'hex')
$$;

-- Bad input, raised as SQLSTATE PJ001 (pgjobs.InvalidJob in Python).
create function pgjobs.invalid_job(message text) returns void
language plpgsql as $$
begin
    raise exception '%', message using errcode = 'PJ001';
end
$$;

-- "No organization set", its own SQLSTATE, PJ004: a caller's setup bug (scope
-- the transaction, see pgjobs.tenant), told apart from a refusal (42501) by
-- programs in any language. Raised by every write that needs a scope and has
-- none: a job's (jobs_before_insert) and a schedule's (schedules_before_write).
create function pgjobs.no_organization() returns void
language plpgsql as $$
begin
    raise exception 'pgjobs: this session is scoped to no organization'
        using errcode = 'PJ004',
              hint = 'set it in the same transaction: select set_config('
                     '''pgjobs.organization'', <organization>, true), or pgjobs.tenant() '
                     'in Python';
end
$$;

-- The side channel between the insert trigger and enqueue_jobs: a row the
-- trigger skips as a duplicate returns nothing to the INSERT, so the trigger
-- notes the row's input position (which enqueue_jobs passes as its id) in a
-- transaction-local setting, and enqueue_jobs takes the list after its INSERT.
create function pgjobs.skipped_input_note(input bigint) returns void
language plpgsql as $$
begin
    perform set_config('pgjobs.skipped_inputs',
                       coalesce(current_setting('pgjobs.skipped_inputs', true), '')
                       || input || ',', true);
end
$$;

-- The input positions noted since the last take, in the order noted; forgets them.
create function pgjobs.skipped_inputs_take() returns bigint[]
language plpgsql as $$
declare
    noted text := current_setting('pgjobs.skipped_inputs', true);
begin
    perform set_config('pgjobs.skipped_inputs', '', true);
    return coalesce(string_to_array(rtrim(noted, ','), ',')::bigint[], '{}');
end
$$;

-- The input limits (0010) of one row, as values given (NULL: not given, so
-- the job type's default or the session's scope, which their own limits
-- hold): true when one is broken. One test for the insert trigger and
-- pgjobs.enqueue_plain; SQL, so it is inlined into their cached plans and
-- costs no call per row. The depth test stops at level 32, so a payload
-- nested 5,000 deep costs no more than one nested 33 deep; sizes are of the
-- uncompressed value (`payload || '{}'` hands back the payload itself,
-- decompressed: a value read from another table may arrive compressed).
-- pgjobs.job_problem and pgjobs.payload_problem say which limit it was.
create function pgjobs.input_refused(
    organization text, queue text, dedup_key text, priority int, max_attempts int,
    timeout_seconds int, run_at timestamptz, depends_on bigint[], payload jsonb)
returns boolean
language sql stable parallel safe as $$
    select not pgjobs.name_ok(organization)
        or not pgjobs.name_ok(queue)
        or octet_length(dedup_key) > 1000
        or priority not between 0 and 3
        or max_attempts not between 1 and 1000  -- pgjobs.max_attempts_limit()
        or timeout_seconds not between 0 and 2000000  -- pgjobs.max_timeout_seconds()
        or not (run_at > '0001-01-02 00:00:00+00' and run_at < '9999-12-30 00:00:00+00')
        or cardinality(depends_on) > 1000
        or jsonb_typeof(payload) <> 'object'
        or pg_column_size(payload || '{}') > 1048576  -- pgjobs.max_payload_bytes()
        or jsonb_path_exists(payload, 'strict $.**{32}')
        or jsonb_path_exists(payload,
               'strict $.** ? (@.type() == "number" && (@ >= 1e300 || @ <= -1e300))')
$$;

-- Every new row of jobs comes through here, whoever inserts it
-- (pgjobs.enqueue, enqueue_jobs or a plain INSERT), in named steps: the input
-- limits, the session's scope, the job type, the organization, the type's
-- defaults, validation, dependencies, the id, dedup and the wake-up. The
-- steps are blocks of one function, not functions or triggers of their own,
-- so a row pays for no extra call, and a statement prepares no trigger
-- condition but this trigger's short one (0110: Postgres reads and plans
-- every WHEN clause of a table's triggers again for each INSERT statement,
-- which cost a one-row enqueue more than the row itself).
-- The owner's rights (90_security.sql): it takes dedup keys and locks parents
-- FOR SHARE for sessions that may do neither themselves.
create function pgjobs.jobs_before_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    t     pgjobs.job_types;
    scope text := pgjobs.current_organization();
    given bigint := new.id;  -- enqueue_jobs puts the input's position here
begin
    -- First, so a row over a limit is refused whatever else is wrong with it,
    -- and no dedup key is taken nor wake-up sent for it.
    <<input_limits>>
    begin
        if pgjobs.input_refused(coalesce(new.organization, scope), new.queue, new.dedup_key,
                                new.priority, new.max_attempts, new.timeout_seconds,
                                new.run_at, new.depends_on, new.payload) then
            perform pgjobs.invalid_job(coalesce(
                pgjobs.job_problem(new),
                pgjobs.payload_problem(new.payload),
                -- Left NULL, the organization is the session's scope.
                'organization must be 1-200 characters without control characters'));
        end if;
    end input_limits;

    -- No scope is PJ004 (pgjobs.no_organization), before anything else is
    -- looked at. Workers and admins, who may enqueue system jobs and any
    -- organization's jobs without a scope, pass.
    <<session_scope>>
    begin
        if scope is null and not pgjobs.sees_all() then
            perform pgjobs.no_organization();
        end if;
    end session_scope;

    <<job_type>>
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
    end job_type;

    -- A scoped session writes its own organization's jobs only. Checked before
    -- any dedup key or dependency is read, so naming another organization
    -- fails the same way whatever that organization holds.
    <<scope>>
    begin
        new.organization := coalesce(new.organization, scope);
        if new.organization is distinct from scope or new.organization is null then
            if not pgjobs.sees_all() then
                raise exception '%', case when scope is null
                    then 'pgjobs: this session is scoped to no organization (see pgjobs.tenant)'
                    else format('pgjobs: organization %L is outside this session''s scope',
                                new.organization) end
                    using errcode = 'insufficient_privilege';
            end if;
        end if;
    end scope;

    <<type_defaults>>
    begin
        new.queue           := coalesce(new.queue, t.queue);
        new.priority        := coalesce(new.priority, t.priority);
        new.max_attempts    := coalesce(new.max_attempts, t.max_attempts);
        new.timeout_seconds := coalesce(new.timeout_seconds, t.timeout_seconds);
        new.payload         := coalesce(new.payload, '{}');
        new.run_at          := coalesce(new.run_at, now());
        new.created_at      := now();
        new.attempt         := 0;
    end type_defaults;

    <<validation>>
    begin
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
    end validation;

    -- Parents must exist in the same organization. FOR SHARE holds them still
    -- until we commit, so a parent cannot finish unseen in between. The job
    -- waits for parents not completed yet, and starts canceled if one ended
    -- without completing.
    <<dependencies>>
    declare
        n_given      int;
        n_found      int;
        n_done       int;
        failed       bigint;
        failed_state text;
    begin
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
                -- Born canceled: jobs_after_insert_canceled ends it (70_retention.sql).
                select state into failed_state from pgjobs.jobs where id = failed;
                new.state       := 'waiting';
                new.canceled_by := 'dependency';
                new.last_error  := format('dependency %s ended %s', failed, failed_state);
            elsif n_done < n_given then
                new.state := 'waiting';
            end if;
        else
            new.depends_on := null;
        end if;
    end dependencies;

    -- Always drawn here: whatever id the caller gave is not kept, so no tenant
    -- can pick, collide with or probe for one.
    <<id>>
    begin
        new.id := nextval('pgjobs.jobs_id_seq');
    end id;

    -- A live job holding the same key makes this row a duplicate: nothing is
    -- written, and enqueue_jobs learns which of its inputs it was.
    <<dedup>>
    begin
        if new.dedup_key is null and t.dedup_by_payload then
            new.dedup_key := pgjobs.payload_key(new.payload);
        end if;
        if new.dedup_key is not null then
            insert into pgjobs.dedup_keys as d
                   (organization, job_type, dedup_key, job_id, active, expires_at)
            values (coalesce(new.organization, ''), new.job_type, new.dedup_key, new.id,
                    not pgjobs.is_finished(new.state),
                    now() + make_interval(secs => t.dedup_window_seconds))
            on conflict (organization, job_type, dedup_key) do update
                   set job_id = excluded.job_id, active = excluded.active,
                       expires_at = excluded.expires_at
                 where not d.active and d.expires_at <= now();
            if not found then
                perform pgjobs.skipped_input_note(given);
                return null;
            end if;
        end if;
    end dedup;

    -- Wake the queue's workers. Postgres sends one notification per distinct
    -- payload per transaction, so a bulk insert still wakes each queue once.
    <<wake_up>>
    begin
        if new.state = 'queued' then
            perform pg_notify('pgjobs_wakeup', new.queue);
        end if;
    end wake_up;
    -- Checked: the row is stored as enqueue_plain stores its own, and a
    -- later insert of it (a row moved between partitions) skips this trigger.
    new.prechecked := true;
    return new;
end
$$;

-- On jobs_active, where every new job lands (it starts queued), not on
-- pgjobs.jobs: an UPDATE that moves a row to another partition inserts it
-- there and fires that partition's insert triggers (0060). A job moving to
-- jobs_finished so meets none; one moving back (pgjobs.retry) holds a lease
-- token (jobs_finished_token_check), which no new row has: no runtime role
-- but the workers may write that column.
create trigger jobs_before_insert
    before insert on pgjobs.jobs_active
    for each row
    when (new.prechecked is not true and new.lease_token is null)
    execute function pgjobs.jobs_before_insert();

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

-- Enqueue with the outcome spelled out: the new id, or the live duplicate's.
-- priority is an int, range-checked inside: Postgres casts int to smallint
-- only on assignment, never in a function call, so an int4 parameter from a
-- driver, or `priority => 1` from psql, would find no smallint function.
create function pgjobs.enqueue_job(
    job_type        text,
    payload         jsonb       default '{}',
    organization    text        default null,
    queue           text        default null,
    priority        int         default null,
    run_at          timestamptz default null,
    dedup_key       text        default null,
    depends_on      bigint[]    default null,
    max_attempts    int         default null,
    timeout_seconds int         default null,
    out id bigint, out duplicate boolean)
language plpgsql as $$
declare
    org text := coalesce(enqueue_job.organization, pgjobs.current_organization());
    key text := enqueue_job.dedup_key;
begin
    -- Checked before the smallint column's assignment cast could fail with a
    -- bare "smallint out of range".
    if enqueue_job.priority not between 0 and 3 then
        perform pgjobs.invalid_job(format('priority must be 0-3, got %s', enqueue_job.priority));
    end if;
    insert into pgjobs.jobs as j (job_type, payload, organization, queue, priority, run_at,
                                  dedup_key, depends_on, max_attempts, timeout_seconds)
    values (enqueue_job.job_type, coalesce(enqueue_job.payload, '{}'), org, enqueue_job.queue,
            enqueue_job.priority, enqueue_job.run_at, key, enqueue_job.depends_on,
            enqueue_job.max_attempts, enqueue_job.timeout_seconds)
    returning j.id into id;
    if id is not null then
        duplicate := false;
        return;
    end if;
    -- The insert trigger skipped the row: find the job that holds the key.
    if key is null then
        key := pgjobs.payload_key(enqueue_job.payload);
    end if;
    select d.job_id into id from pgjobs.dedup_keys d
     where d.organization = coalesce(org, '') and d.job_type = enqueue_job.job_type
       and d.dedup_key = key;
    duplicate := true;
end
$$;

create function pgjobs.enqueue(
    job_type        text,
    payload         jsonb       default '{}',
    organization    text        default null,
    queue           text        default null,
    priority        int         default null,
    run_at          timestamptz default null,
    dedup_key       text        default null,
    depends_on      bigint[]    default null,
    max_attempts    int         default null,
    timeout_seconds int         default null)
returns bigint language sql as $$
    select (pgjobs.enqueue_job(job_type, payload, organization, queue, priority, run_at,
                               dedup_key, depends_on, max_attempts, timeout_seconds)).id
$$;

-- The jobs of a bulk enqueue, one row per element of the JSON array, in order.
create function pgjobs.job_inputs(jobs jsonb)
returns table (ord bigint, job_type text, payload jsonb, organization text, queue text,
               priority smallint, run_at timestamptz, dedup_key text, depends_on bigint[],
               max_attempts int, timeout_seconds int)
language sql stable as $$
    select j.ord, j.job_type, j.payload, j.organization, j.queue, j.priority, j.run_at,
           j.dedup_key, j.depends_on, j.max_attempts, j.timeout_seconds
      from rows from (jsonb_to_recordset(jobs) as (
           job_type text, payload jsonb, organization text, queue text, priority smallint,
           run_at timestamptz, dedup_key text, depends_on bigint[], max_attempts int,
           timeout_seconds int))
      with ordinality as j(job_type, payload, organization, queue, priority, run_at,
                           dedup_key, depends_on, max_attempts, timeout_seconds, ord)
$$;

-- Raises the PJ001 error of the first limit a job of pgjobs.enqueue_plain
-- breaks, as the row trigger words it (pgjobs.input_refused said one is).
create function pgjobs.input_refuse(
    job_type text, organization text, queue text, priority int, max_attempts int,
    timeout_seconds int, run_at timestamptz, payload jsonb)
returns boolean
language plpgsql volatile as $$
begin
    perform pgjobs.invalid_job(coalesce(
        pgjobs.job_problem(jsonb_populate_record(null::pgjobs.jobs, jsonb_build_object(
            'job_type', job_type, 'organization', organization, 'queue', queue,
            'priority', priority, 'max_attempts', max_attempts,
            'timeout_seconds', timeout_seconds, 'run_at', run_at))),
        pgjobs.payload_problem(payload),
        'organization must be 1-200 characters without control characters'));
    return false;
end
$$;

-- An array of one element as n of it; any other array (or NULL) as it is.
create function pgjobs.spread(a anyarray, n int) returns anyarray
language sql immutable parallel safe as $$
    select case when cardinality(a) = 1 and n > 1 then array_fill(a[1], array[n]) else a end
$$;

-- A bulk enqueue of plain jobs, checked and completed set-based: the row
-- trigger's work for the whole batch in one INSERT joined to job_types and
-- one wake-up per queue. The batch comes as one array per column, element i
-- of each being job i (an array of one element: the same value for every
-- job; a NULL array: NULL for every job), so a client sends it as typed
-- arrays, and a column its jobs share as one value.
-- Plain: every job's type exists, is enabled and does not dedup by payload,
-- and every organization is the session's scope (or the session sees all);
-- dedup keys and parents cannot even be given. Returns the new ids in input
-- order, or NULL and writes nothing for any other batch: the caller then
-- sends it through the row trigger (pgjobs.enqueue_jobs), which raises the
-- same error a plain INSERT of those rows would. The input limits are
-- checked here, before anything is written, in input order, with the row
-- trigger's test and messages: these rows skip that trigger.
-- A batch whose jobs differ in their payloads only (0140: the usual batch,
-- and what pgjobs.enqueue_many sends as one element per column) has its
-- type, scope and limits tested once, not per row, and its rows read from
-- the payloads alone: no join, window or sort per row, one wake-up.
-- The owner's rights (90_security.sql): only the owner may set prechecked, so
-- anyone may call this; it trusts nothing its caller gives.
create function pgjobs.enqueue_plain(
    job_type        text[],
    payload         jsonb[]       default null,
    organization    text[]        default null,
    queue           text[]        default null,
    priority        smallint[]    default null,
    run_at          timestamptz[] default null,
    max_attempts    int[]         default null,
    timeout_seconds int[]         default null)
returns bigint[]
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Generic plans (0170): the custom plan of each statement, fitted to the
-- batch's size, was made again on every call, and cost a batch of 100 more
-- than its rows' defaults and checks.
set plan_cache_mode = force_generic_plan
as $$
declare
    scope    text := pgjobs.current_organization();
    everyone boolean := pgjobs.sees_all();
    n        int := greatest(cardinality(job_type), cardinality(payload),
                             cardinality(organization), cardinality(queue),
                             cardinality(priority), cardinality(run_at),
                             cardinality(max_attempts), cardinality(timeout_seconds));
    ids      bigint[];
    queues   text[];
    typ      pgjobs.job_types;
    org      text;
begin
    -- An array of one element gives every job the same value.
    if n = 0 then
        return '{}';
    end if;
    if not coalesce(cardinality(job_type) in (1, n), false)
       or not coalesce(cardinality(payload) in (1, n), true)
       or not coalesce(cardinality(organization) in (1, n), true)
       or not coalesce(cardinality(queue) in (1, n), true)
       or not coalesce(cardinality(priority) in (1, n), true)
       or not coalesce(cardinality(run_at) in (1, n), true)
       or not coalesce(cardinality(max_attempts) in (1, n), true)
       or not coalesce(cardinality(timeout_seconds) in (1, n), true) then
        perform pgjobs.invalid_job('enqueue_plain takes a job_type and one array element per '
                                   'job, or one for every job');
    end if;

    <<one_head>>
    declare
        head_type         text;
        q                 text;  -- the jobs' queue, and the one to wake: a name within the limits
        head_priority     smallint;
        head_run_at       timestamptz;
        head_max_attempts int;
        head_timeout      int;
        head_now          timestamptz := now();
        head_actor        text := pgjobs.current_actor();
    begin
        -- Every column but the payload is one value for every job.
        if cardinality(job_type) = 1 and coalesce(cardinality(organization), 1) = 1
           and coalesce(cardinality(queue), 1) = 1 and coalesce(cardinality(priority), 1) = 1
           and coalesce(cardinality(run_at), 1) = 1
           and coalesce(cardinality(max_attempts), 1) = 1
           and coalesce(cardinality(timeout_seconds), 1) = 1 then
            org := coalesce(organization[1], scope);
            select * into typ from pgjobs.job_types jt where jt.name = job_type[1];
            if not coalesce(found and typ.enabled and not typ.dedup_by_payload
                            and (everyone or org = scope), false) then
                return null;
            end if;
            -- The limits of the values every job shares, once: a job over one
            -- is the first job, refused as the general path below refuses it.
            if pgjobs.input_refused(org, queue[1], null, priority[1], max_attempts[1],
                                    timeout_seconds[1], run_at[1], null, null) then
                perform pgjobs.input_refuse(job_type[1], org, queue[1], priority[1],
                                            max_attempts[1], timeout_seconds[1], run_at[1],
                                            coalesce(payload[1], '{}'));
            end if;
            head_type := job_type[1];
            q := coalesce(queue[1], typ.queue);
            head_priority := coalesce(priority[1], typ.priority);
            head_run_at := coalesce(run_at[1], head_now);
            head_max_attempts := coalesce(max_attempts[1], typ.max_attempts);
            head_timeout := coalesce(timeout_seconds[1], typ.timeout_seconds);
            -- Then each payload's, in input order: the empty object, the
            -- usual payload, meets them all. The ids are drawn first, one per
            -- job in input order, and every value the jobs share is computed
            -- once here: each row is a payload and its id (0170: no RETURNING
            -- to collect and sort, no column default or coalesce per row).
            ids := array(select nextval('pgjobs.jobs_id_seq') from generate_series(1, n));
            insert into pgjobs.jobs (id, job_type, payload, organization, queue, priority,
                                     run_at, max_attempts, timeout_seconds, prechecked,
                                     state, attempt, created_at, created_by)
            select u.id, head_type, coalesce(u.payload, '{}'), org, q, head_priority,
                   head_run_at, head_max_attempts, head_timeout, true,
                   'queued', 0, head_now, head_actor
              from unnest(ids, enqueue_plain.payload) as u(id, payload)
             where case when u.payload is null or u.payload = '{}' then true
                        when pgjobs.input_refused(null, null, null, null, null, null,
                                                  null, null, u.payload)
                        then pgjobs.input_refuse(job_type[1], org, queue[1], priority[1],
                                                 max_attempts[1], timeout_seconds[1],
                                                 run_at[1], u.payload)
                        else true end;
            perform pg_notify('pgjobs_wakeup', q);
            return ids;
        end if;
    end one_head;

    job_type := pgjobs.spread(job_type, n);
    payload := pgjobs.spread(payload, n);
    organization := pgjobs.spread(organization, n);
    queue := pgjobs.spread(queue, n);
    priority := pgjobs.spread(priority, n);
    run_at := pgjobs.spread(run_at, n);
    max_attempts := pgjobs.spread(max_attempts, n);
    timeout_seconds := pgjobs.spread(timeout_seconds, n);
    -- Every job of the batch is read before any is written (the window), so
    -- a batch that is not plain writes nothing. Ids are drawn after the sort
    -- (the subquery's ORDER BY; OFFSET 0 keeps the test from being pushed
    -- below it), so they ascend in input order, and a row over a limit is
    -- refused in input order too, as by the row trigger.
    with input as (
        select i.*, t.queue as type_queue, t.priority as type_priority,
               t.max_attempts as type_max_attempts, t.timeout_seconds as type_timeout,
               bool_and(coalesce(t.enabled and not t.dedup_by_payload
                                 and (everyone or coalesce(i.organization, scope) = scope),
                                 false)) over () as plain
          from unnest(enqueue_plain.job_type, enqueue_plain.payload, enqueue_plain.organization,
                      enqueue_plain.queue, enqueue_plain.priority, enqueue_plain.run_at,
                      enqueue_plain.max_attempts, enqueue_plain.timeout_seconds)
               with ordinality as i(job_type, payload, organization, queue, priority, run_at,
                                    max_attempts, timeout_seconds, ord)
          left join pgjobs.job_types t on t.name = i.job_type
    ), inserted as (
        insert into pgjobs.jobs as j (id, job_type, payload, organization, queue, priority,
                                      run_at, max_attempts, timeout_seconds, prechecked)
        select nextval('pgjobs.jobs_id_seq'), i.job_type, coalesce(i.payload, '{}'),
               coalesce(i.organization, scope), coalesce(i.queue, i.type_queue),
               coalesce(i.priority, i.type_priority), coalesce(i.run_at, now()),
               coalesce(i.max_attempts, i.type_max_attempts),
               coalesce(i.timeout_seconds, i.type_timeout), true
          from (select * from input order by ord offset 0) i
         -- CASE, not AND, which the planner may reorder: the limits are tested
         -- only once the batch is known plain. Only given values are tested:
         -- a type's defaults meet the type's own limits.
         where case when not i.plain then false
                    when pgjobs.input_refused(coalesce(i.organization, scope), i.queue, null,
                                              i.priority, i.max_attempts, i.timeout_seconds,
                                              i.run_at, null, i.payload)
                    then pgjobs.input_refuse(i.job_type, coalesce(i.organization, scope),
                                             i.queue, i.priority, i.max_attempts,
                                             i.timeout_seconds, i.run_at, i.payload)
                    else true end
        returning j.id, j.queue
    )
    select array_agg(n.id order by n.id), array_agg(distinct n.queue) into ids, queues
      from inserted n;
    perform pg_notify('pgjobs_wakeup', q) from unnest(queues) q;
    return ids;
end
$$;

-- pgjobs.enqueue_plain for a batch given as enqueue_jobs' JSON array: NULL for
-- a batch that names a dedup key or parents, or that enqueue_plain finds not
-- plain, and then nothing is written.
create function pgjobs.enqueue_checked(jobs jsonb) returns bigint[]
language plpgsql as $$
declare
    ids bigint[];
begin
    select case when bool_and(i.dedup_key is null and coalesce(cardinality(i.depends_on), 0) = 0)
                then pgjobs.enqueue_plain(
                         array_agg(i.job_type order by i.ord), array_agg(i.payload order by i.ord),
                         array_agg(i.organization order by i.ord), array_agg(i.queue order by i.ord),
                         array_agg(i.priority order by i.ord), array_agg(i.run_at order by i.ord),
                         array_agg(i.max_attempts order by i.ord),
                         array_agg(i.timeout_seconds order by i.ord)) end
      into ids
      from pgjobs.job_inputs(jobs) i
    having count(*) > 0;
    return ids;
end
$$;

-- Bulk enqueue from a JSON array of objects with enqueue_job's argument names.
-- Returns one row per input element, in input order. Plain jobs go in
-- set-based (pgjobs.enqueue_plain); any other batch in one multi-row INSERT
-- through the row triggers:
--
-- Each row goes in with its position in the input as its id; the trigger
-- replaces it and notes the positions of the duplicates it skips. Rows are
-- inserted, and their ids drawn, in input order, so the new ids in ascending
-- order belong to the inputs not skipped, in order.
create function pgjobs.enqueue_jobs(jobs jsonb)
returns table (ord bigint, id bigint, duplicate boolean)
language plpgsql as $$
declare
    ids     bigint[];
    skipped bigint[];
begin
    if jsonb_typeof(jobs) is distinct from 'array' then
        perform pgjobs.invalid_job('enqueue_jobs takes a JSON array of jobs');
    end if;
    if jsonb_array_length(jobs) = 0 then
        return;
    end if;
    ids := pgjobs.enqueue_checked(jobs);
    if ids is not null then
        return query select g.ord, ids[g.ord], false
                       from generate_series(1::bigint, cardinality(ids)) as g(ord);
        return;
    end if;
    perform pgjobs.skipped_inputs_take();  -- forget what earlier inserts noted
    with inserted as (
        insert into pgjobs.jobs (id, job_type, payload, organization, queue, priority, run_at,
                                 dedup_key, depends_on, max_attempts, timeout_seconds)
        select j.ord, j.job_type, coalesce(j.payload, '{}'),
               coalesce(j.organization, pgjobs.current_organization()), j.queue, j.priority,
               j.run_at, j.dedup_key, j.depends_on, j.max_attempts, j.timeout_seconds
          from pgjobs.job_inputs(jobs) j
         order by j.ord
        returning pgjobs.jobs.id
    )
    select array_agg(i.id order by i.id) into ids from inserted i;
    skipped := pgjobs.skipped_inputs_take();

    if cardinality(skipped) = 0 then  -- no duplicates: nothing to look up
        return query select g.ord, ids[g.ord], false
                       from generate_series(1::bigint, jsonb_array_length(jobs)) as g(ord);
        return;
    end if;
    -- A later statement, so it sees the keys this batch's own rows took.
    return query
    select j.ord,
           case when j.ord = any(skipped) then d.job_id
                else ids[j.ord - (select count(*) from unnest(skipped) s where s < j.ord)] end,
           j.ord = any(skipped)
      from pgjobs.job_inputs(jobs) j
      left join pgjobs.dedup_keys d
        on j.ord = any(skipped)
       and d.organization = coalesce(j.organization, pgjobs.current_organization(), '')
       and d.job_type = j.job_type
       and d.dedup_key = coalesce(j.dedup_key, pgjobs.payload_key(j.payload))
     order by j.ord;
end
$$;
