-- Bulk enqueue nearer the raw INSERT (issue 19, item 4): the one-head path of
-- pgjobs.enqueue_plain draws its batch's ids first and inserts from the ids
-- and the payloads alone, every value the jobs share (type, organization,
-- queue, priority, run_at, limits, state, attempt, created_at, created_by)
-- computed once for the statement: no RETURNING to collect and sort, no
-- column default, coalesce or array subscript per row. Its statements run
-- with generic plans (a custom plan was made again on every call), and the
-- shared values' limits are tested without a payload (each payload's are
-- tested per row). The same checks, in the same order, with the same
-- messages.

create or replace function pgjobs.enqueue_plain(
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
