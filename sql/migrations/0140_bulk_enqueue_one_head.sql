-- Bulk enqueue that leads (issue 19, item 4): a batch whose jobs share every
-- column but the payload (what pgjobs.enqueue_many sends as one array element
-- per column) has its type, scope and the limits of those shared values tested
-- once, not per row; each row only has its payload's limits tested (none for
-- the empty object). The rows are read straight from the payload array: no
-- join to job_types, window or per-row tests of shared values, one wake-up.
-- Any other plain batch takes the general set-based path as before (0110).

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
        q text;  -- the queue to wake: a name within the input limits
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
                                    timeout_seconds[1], run_at[1], null, '{}') then
                perform pgjobs.input_refuse(job_type[1], org, queue[1], priority[1],
                                            max_attempts[1], timeout_seconds[1], run_at[1],
                                            coalesce(payload[1], '{}'));
            end if;
            -- Then each payload's, in input order (ids drawn in that order
            -- too): the empty object, the usual payload, meets them all.
            with inserted as (
                insert into pgjobs.jobs as j (id, job_type, payload, organization, queue,
                                              priority, run_at, max_attempts,
                                              timeout_seconds, prechecked)
                select nextval('pgjobs.jobs_id_seq'), job_type[1], p.payload, org,
                       coalesce(queue[1], typ.queue), coalesce(priority[1], typ.priority),
                       coalesce(run_at[1], now()), coalesce(max_attempts[1], typ.max_attempts),
                       coalesce(timeout_seconds[1], typ.timeout_seconds), true
                  from (select coalesce(u.payload, '{}') as payload, u.ord
                          from unnest(coalesce(enqueue_plain.payload, array[null::jsonb]))
                               with ordinality as u(payload, ord)
                         order by u.ord offset 0) p
                 where case when p.payload = '{}' then true
                            when pgjobs.input_refused(null, null, null, null, null, null,
                                                      null, null, p.payload)
                            then pgjobs.input_refuse(job_type[1], org, queue[1], priority[1],
                                                     max_attempts[1], timeout_seconds[1],
                                                     run_at[1], p.payload)
                            else true end
                returning j.id
            )
            select array_agg(i.id order by i.id) into ids from inserted i;
            q := coalesce(queue[1], typ.queue);
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
