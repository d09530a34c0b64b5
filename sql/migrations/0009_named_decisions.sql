-- Named decisions: what the SQL decided in several places is written once.
--
-- * "Finished" (completed, dead or canceled) is pgjobs.is_finished(state),
--   an IMMUTABLE SQL function the planner inlines: the state-change trigger,
--   the insert trigger, queue_depth and the runtime statements use it instead
--   of a list of states each. cancel keeps its list: 0012 restates cancel,
--   and a database that has 0012 applies this file after it. jobs_finished_idx
--   keeps its predicate: the inlined call matches it, and rebuilding the index
--   would block writes.
-- * How a failed attempt ends is pgjobs.failure_state(), applied to the job
--   by pgjobs.failed_attempt(), for the worker's failures and the lease rescue.
-- * The insert trigger reads as named steps, and its side channel to
--   enqueue_jobs (the positions of skipped duplicates) is a pair of functions.
--
-- The functions restated here are their new versions whole; their settings
-- are written in their CREATE, which replaces any set before.

-- A finished job has ended and nothing runs it again but pgjobs.retry: the
-- one definition of "finished". SQL and IMMUTABLE, so the planner inlines it
-- and a query filtering on it still matches jobs_finished_idx's predicate.
create function pgjobs.is_finished(state text)
returns boolean language sql immutable parallel safe as $$
    select state in ('completed', 'dead', 'canceled')
$$;

-- Where a failed attempt leaves its job: canceled when a cancel was requested,
-- dead when the error is permanent or the attempts are spent, else retrying.
-- The worker's failures (job_fail_many) and the lease rescue both decide here,
-- through failed_attempt below.
create function pgjobs.failure_state(cancel_requested boolean, permanent boolean,
                                     attempt int, max_attempts int)
returns text language sql immutable parallel safe as $$
    select case when cancel_requested then 'canceled'
                when permanent or attempt >= max_attempts then 'dead'
                else 'retrying' end
$$;

-- What a failed attempt changes on its job: the state failure_state decides,
-- the time a retrying job runs again (after the backoff) and the time a
-- finished one finished. One SQL expression the planner inlines into the
-- statement calling it, field by field, so a row pays for no function call
-- and draws its backoff once: job_fail_many and lease_rescue call it as
-- SET (state, run_at, finished_at) = row((pgjobs.failed_attempt(...)).*).
create type pgjobs.failure_outcome as (state text, run_at timestamptz, finished_at timestamptz);

create function pgjobs.failed_attempt(cancel_requested boolean, permanent boolean, attempt int,
                                      max_attempts int, run_at timestamptz,
                                      retry_base_seconds double precision,
                                      retry_cap_seconds double precision, now timestamptz)
returns pgjobs.failure_outcome language sql volatile as $$
    select row(pgjobs.failure_state(cancel_requested, permanent, attempt, max_attempts),
               case when pgjobs.failure_state(cancel_requested, permanent, attempt,
                                              max_attempts) = 'retrying'
                    then now + pgjobs.retry_delay(attempt, retry_base_seconds, retry_cap_seconds)
                    else run_at end,
               case when pgjobs.is_finished(pgjobs.failure_state(cancel_requested, permanent,
                                                                 attempt, max_attempts))
                    then now end)::pgjobs.failure_outcome
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

-- Every new row of jobs comes through here, whoever inserts it
-- (pgjobs.enqueue, enqueue_jobs or a plain INSERT), in named steps: the job
-- type, the scope, the type's defaults, validation, dependencies, the id,
-- dedup and the wake-up. The steps are blocks of one function, not functions
-- of their own, so a row pays for no extra call.
create or replace function pgjobs.jobs_before_insert() returns trigger
language plpgsql as $$
declare
    t     pgjobs.job_types;
    scope text := pgjobs.current_organization();
    given bigint := new.id;  -- enqueue_jobs puts the input's position here
begin
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
    return new;
end
$$;

-- Bulk enqueue from a JSON array of objects with enqueue_job's argument names:
-- one multi-row INSERT through the same trigger. Returns one row per input
-- element, in input order.
--
-- Each row goes in with its position in the input as its id; the trigger
-- replaces it and notes the positions of the duplicates it skips. Rows are
-- inserted, and their ids drawn, in input order, so the new ids in ascending
-- order belong to the inputs not skipped, in order.
create or replace function pgjobs.enqueue_jobs(jobs jsonb)
returns table (ord bigint, id bigint, duplicate boolean)
language plpgsql as $$
declare
    ids     bigint[];
    skipped bigint[];
begin
    if jsonb_typeof(jobs) is distinct from 'array' then
        perform pgjobs.invalid_job('enqueue_jobs takes a JSON array of jobs');
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

-- After any UPDATE statement of jobs: the state machine, history, NOTIFY,
-- dependents and dedup keys, set-based.
--
-- Every UPDATE of jobs runs it, from any session (a worker's, an operator's
-- cancel or retry). No JIT: past a few million rows the planner's cost
-- estimates for its short statements cross jit_above_cost, and compiling them
-- took two fifths of the workers' database time. No sequential scan: its plans
-- are cached for the session, and one made while the table was short could be
-- a sequential scan that then reads the whole table on every completion; it
-- only ever looks rows up by id or through jobs_waiting_parents_idx.
create or replace function pgjobs.jobs_after_update() returns trigger
language plpgsql
set jit = off
set enable_seqscan = off
as $$
declare
    completed_ids bigint[];
    failed_ids    bigint[];
    woken_queues  text[];
    dedup_changed boolean;
    refused       text[];
    children      bigint[];
    q             text;
begin
    -- Only the columns the history and the events need: never the payload.
    with changed as (
        select n.id, n.organization, n.job_type, n.queue, n.attempt, n.state, n.dedup_key,
               n.last_error_class, n.last_error, n.last_traceback, n.last_duration_ms,
               n.started_at, coalesce(n.worker, o.worker) as worker, o.state as from_state
          from new_rows n join old_rows o on o.id = n.id
         where n.state <> o.state
    ), history as (
        insert into pgjobs.job_events
               (job_id, organization, job_type, attempt, from_state, to_state,
                worker, error_class, message, traceback, duration_ms)
        select c.id, c.organization, c.job_type, c.attempt, c.from_state, c.state, c.worker,
               case when c.from_state = 'running' and c.state <> 'completed' then c.last_error_class end,
               case when c.state in ('retrying', 'dead', 'canceled') then c.last_error end,
               case when c.from_state = 'running' and c.state <> 'completed' then c.last_traceback end,
               case when c.from_state = 'running' then
                    coalesce(c.last_duration_ms,
                             extract(epoch from now() - c.started_at) * 1000) end
          from changed c
    ), notified as (
        select c.*,
               pg_notify('pgjobs_state', pgjobs.state_event(c.id, c.organization, c.job_type,
                                                            c.state, c.attempt)) as sent
          from changed c
    )
    select array_agg(id) filter (where state = 'completed'),
           array_agg(id) filter (where state in ('dead', 'canceled')),
           array_agg(distinct queue) filter (where state in ('queued', 'retrying')),
           bool_or(dedup_key is not null
                   and (pgjobs.is_finished(state) or pgjobs.is_finished(from_state))),
           min(array[id::text, from_state, state])
               filter (where not pgjobs.transition_allowed(from_state, state))
      into completed_ids, failed_ids, woken_queues, dedup_changed, refused
      from notified;

    -- A forbidden transition undoes the whole statement (its history and
    -- NOTIFYs with it).
    if refused is not null then
        raise exception 'pgjobs: job % cannot go from % to %', refused[1], refused[2], refused[3]
            using errcode = 'PJ003';
    end if;

    if woken_queues is not null then
        foreach q in array woken_queues loop
            perform pg_notify('pgjobs_wakeup', q);
        end loop;
    end if;

    -- A dedup key stays taken while its job is unfinished.
    if dedup_changed then
        update pgjobs.dedup_keys d
           set active = not pgjobs.is_finished(n.state)
          from new_rows n
         where n.dedup_key is not null
           and d.organization = coalesce(n.organization, '')
           and d.job_type = n.job_type and d.dedup_key = n.dedup_key
           and d.job_id = n.id
           and d.active = pgjobs.is_finished(n.state);  -- the flag is out of date
    end if;

    if completed_ids is not null then
        -- Lock the waiting children first, in id order. Two parents of one
        -- child completing in concurrent transactions would otherwise each
        -- see the other still running and leave the child waiting for ever:
        -- the second completion waits here until the first commits, and the
        -- release below, a later statement with a fresh snapshot, then sees
        -- both parents completed. Id order keeps two batches from deadlocking.
        select array_agg(w.id) into children
          from (select c.id from pgjobs.jobs c
                 where c.state = 'waiting' and c.depends_on && completed_ids
                 order by c.id
                   for update) w;
        if children is not null then
            -- A waiting child runs once its last parent has completed.
            update pgjobs.jobs c
               set state = 'queued', run_at = greatest(c.run_at, now())
             where c.id = any(children)
               and c.state = 'waiting'
               and not exists (select 1 from pgjobs.jobs p
                                where p.id = any(c.depends_on) and p.state <> 'completed');
        end if;
    end if;

    if failed_ids is not null then
        -- A parent that ended without completing (dead or canceled) cancels
        -- its waiting children; their own update re-enters this trigger, which
        -- reaches the grandchildren.
        update pgjobs.jobs c
           set state = 'canceled', canceled_by = 'dependency', finished_at = now(),
               last_error = (select format('dependency %s ended %s', p.id, p.state)
                               from pgjobs.jobs p
                              where p.id = any(c.depends_on) and p.id = any(failed_ids)
                              order by p.id limit 1)
         where c.state = 'waiting' and c.depends_on && failed_ids;
    end if;
    return null;
end
$$;

-- Per queue and priority: what is waiting for a worker, and for how long.
create or replace view pgjobs.queue_depth with (security_invoker = true) as
select queue,
       priority,
       count(*) filter (where state = 'queued' and run_at <= now()) as queued,
       count(*) filter (where state = 'queued' and run_at > now())  as scheduled,
       count(*) filter (where state = 'running')                    as running,
       count(*) filter (where state = 'retrying')                   as retrying,
       count(*) filter (where state = 'waiting')                    as waiting,
       coalesce(extract(epoch from now() - min(run_at)
                        filter (where state = 'queued' and run_at <= now())), 0)
           as oldest_queued_seconds
  from pgjobs.jobs
 where not pgjobs.is_finished(state)
 group by queue, priority;
