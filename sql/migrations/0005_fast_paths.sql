-- The hot path for less database work per job, with the same guarantees.
--
-- * The state machine is checked once per statement, in jobs_after_update,
--   instead of by a row trigger: a row trigger costs every claimed and
--   completed job a call, and the statement trigger already joins old and new.
-- * The pgjobs_state payload is built by concatenation rather than
--   json_build_object (half the cost; the same JSON).
-- * pgjobs.take is PL/pgSQL, whose plans are cached per session: an SQL
--   function is planned again on every call, and the claim calls it each time.
-- * The claim may not use a bitmap scan (see below).

drop trigger jobs_transition_guard on pgjobs.jobs;
drop function pgjobs.jobs_refuse_transition();

-- A NOTIFY payload as JSON text: ids and numbers only (SPEC 2).
create function pgjobs.state_event(id bigint, organization text, job_type text, state text,
                                   attempt int)
returns text language sql stable parallel safe as $$  -- stable, as concat is: inlined
    select concat('{"id":', id, ',"organization":', coalesce(to_json(organization)::text, 'null'),
                  ',"job_type":', to_json(job_type)::text, ',"state":"', state,
                  '","attempt":', attempt, '}')
$$;

-- After any UPDATE statement: the state machine, history, NOTIFY, dependents
-- and dedup keys, set-based.
create or replace function pgjobs.jobs_after_update() returns trigger
language plpgsql as $$
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
                   and (state in ('completed', 'dead', 'canceled')
                        or from_state in ('completed', 'dead', 'canceled'))),
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

    if dedup_changed then
        update pgjobs.dedup_keys d
           set active = n.state not in ('completed', 'dead', 'canceled')
          from new_rows n
         where n.dedup_key is not null
           and d.organization = coalesce(n.organization, '')
           and d.job_type = n.job_type and d.dedup_key = n.dedup_key
           and d.job_id = n.id
           and d.active <> (n.state not in ('completed', 'dead', 'canceled'));
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
        -- A failed parent cancels its waiting children; their own update
        -- re-enters this trigger, which reaches the grandchildren.
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

-- Starts an attempt of each given job, which the caller has locked: one lease
-- token for the batch, returned in the order given. The claim's second half,
-- and what pgjobs.testing uses to run one chosen job.
create or replace function pgjobs.take(worker text, ids bigint[], lease_seconds double precision,
                                       t timestamptz)
returns table (id bigint, job_type text, organization text, payload jsonb, attempt int,
               max_attempts int, timeout_seconds int, checkpoint jsonb, lease_token bigint)
language plpgsql as $$
declare
    token bigint := nextval('pgjobs.lease_token_seq');
begin
    return query
    with claimed as (
        update pgjobs.jobs j
           set state = 'running', attempt = j.attempt + 1, worker = take.worker,
               lease_token = token, started_at = t, finished_at = null,
               lease_expires_at = t + make_interval(secs => lease_seconds),
               last_duration_ms = null
         where j.id = any(ids)
        returning j.id, j.job_type, j.organization, j.payload, j.attempt, j.max_attempts,
                  j.timeout_seconds, j.checkpoint, j.lease_token
    )
    select c.* from claimed c order by array_position(ids, c.id);
end
$$;

-- The claim must walk jobs_runnable_idx in order and stop after n rows. With
-- statistics taken while the queue was short, the planner prefers a bitmap
-- scan that reads and sorts every due row instead: harmless on a short queue,
-- and a collapse once a backlog builds, since each claim then costs the whole
-- backlog and the backlog only grows. So the claim may not use one.
alter function pgjobs.claim(text, text[], int, double precision, timestamptz)
    set enable_bitmapscan = off
    set enable_seqscan = off;

