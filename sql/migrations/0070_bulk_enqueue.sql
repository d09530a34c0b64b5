-- Bulk enqueue leads (issue 19): a batch of plain jobs is checked and
-- completed set-based by pgjobs.enqueue_checked, and its rows, marked by the
-- column prechecked that no tenant may set, skip the per-row triggers. Every
-- other insert (a tenant's INSERT or COPY, and batches with dedup keys,
-- parents or anything to refuse) still passes them. 40_enqueue.sql says why.
alter table pgjobs.jobs add column prechecked boolean;

-- The insert triggers sit on jobs_active (0060), where every new job lands.
drop trigger jobs_authorize_insert on pgjobs.jobs_active;
create trigger jobs_authorize_insert
    before insert on pgjobs.jobs_active
    for each row
    when (new.prechecked is not true and pgjobs.current_organization() is null)
    execute function pgjobs.jobs_authorize_insert();

create or replace function pgjobs.jobs_before_insert() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
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
    -- Checked: the row is stored as enqueue_checked stores its own, and a
    -- later insert of it (a row moved between partitions) skips this trigger.
    new.prechecked := true;
    return new;
end
$$;

drop trigger jobs_before_insert on pgjobs.jobs_active;
create trigger jobs_before_insert
    before insert on pgjobs.jobs_active
    for each row
    when (new.prechecked is not true and new.lease_token is null)
    execute function pgjobs.jobs_before_insert();

create or replace function pgjobs.job_inputs(jobs jsonb)
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

create function pgjobs.enqueue_checked(jobs jsonb) returns bigint[]
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    scope    text := pgjobs.current_organization();
    everyone boolean := pgjobs.sees_all();
    ids      bigint[];
    queues   text[];
begin
    -- Ids are drawn after the sort (Postgres evaluates a volatile output
    -- column above the ORDER BY), so they ascend in input order.
    with input as (
        select i.*, t.queue as type_queue, t.priority as type_priority,
               t.max_attempts as type_max_attempts, t.timeout_seconds as type_timeout,
               -- Each row's test coalesced on its own: bool_and skips NULLs.
               bool_and(coalesce(t.enabled and not t.dedup_by_payload and i.dedup_key is null
                                 and coalesce(cardinality(i.depends_on), 0) = 0
                                 and (everyone or coalesce(i.organization, scope) = scope),
                                 false)) over () as plain
          from pgjobs.job_inputs(jobs) i
          left join pgjobs.job_types t on t.name = i.job_type
    ), inserted as (
        insert into pgjobs.jobs as j (id, job_type, payload, organization, queue, priority,
                                      run_at, max_attempts, timeout_seconds, prechecked)
        select nextval('pgjobs.jobs_id_seq'), i.job_type, coalesce(i.payload, '{}'),
               coalesce(i.organization, scope), coalesce(i.queue, i.type_queue),
               coalesce(i.priority, i.type_priority), coalesce(i.run_at, now()),
               coalesce(i.max_attempts, i.type_max_attempts),
               coalesce(i.timeout_seconds, i.type_timeout), true
          from input i
         where i.plain
         order by i.ord
        returning j.id, j.queue
    )
    select array_agg(n.id order by n.id), array_agg(distinct n.queue) into ids, queues
      from inserted n;
    perform pg_notify('pgjobs_wakeup', q) from unnest(queues) q;
    return ids;
end
$$;

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

-- The owner's rights, as 90_security.sql gives them.
do $$
begin
    if not pg_has_role('pgjobs_owner', 'MEMBER') then
        raise notice 'pgjobs: % cannot act as pgjobs_owner; definer functions keep their owner',
            current_user;
        return;
    end if;
    alter function pgjobs.enqueue_checked(jsonb) owner to pgjobs_owner;
end
$$;
