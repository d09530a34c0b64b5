-- The contract with clients pgjobs did not write (psql, node-postgres, JDBC,
-- ORMs): errors a program can tell apart by SQLSTATE, and an enqueue that
-- takes the integer a driver sends.

-- ---------------------------------------------------------------------------
-- "No organization set" is its own SQLSTATE, PJ004.
--
-- A pgjobs_app session that never set pgjobs.organization got 42501
-- (insufficient_privilege) on enqueue, the same code as a missing grant or
-- another organization's row. The first is a bug in the caller's setup (scope
-- the transaction, see pgjobs.tenant), the others are refusals, and a program
-- in another language has only the SQLSTATE to tell them apart.
--
-- A trigger of its own rather than a new version of jobs_before_insert, so this
-- migration does not carry a copy of that function's body. Triggers of one
-- event fire in name order: jobs_authorize_insert runs before
-- jobs_before_insert, so an unscoped session gets PJ004 before anything else
-- is looked at. The WHEN clause keeps scoped sessions (every tenant's enqueue)
-- from entering PL/pgSQL at all. Workers and admins, who may enqueue system
-- jobs and any organization's jobs without a scope, pass.
-- ---------------------------------------------------------------------------

create or replace function pgjobs.jobs_authorize_insert() returns trigger
language plpgsql as $$
begin
    if not pgjobs.sees_all() then
        raise exception 'pgjobs: this session is scoped to no organization'
            using errcode = 'PJ004',
                  hint = 'set it in the same transaction: select set_config('
                         '''pgjobs.organization'', <organization>, true), or pgjobs.tenant() '
                         'in Python';
    end if;
    return new;
end
$$;

drop trigger if exists jobs_authorize_insert on pgjobs.jobs;
create trigger jobs_authorize_insert
    before insert on pgjobs.jobs
    for each row
    when (pgjobs.current_organization() is null)
    execute function pgjobs.jobs_authorize_insert();

-- ---------------------------------------------------------------------------
-- priority is an int parameter, range-checked inside.
--
-- It was smallint, the column's type. Postgres casts int to smallint only on
-- assignment, never implicitly in a function call, so `priority => 1` from
-- psql and an int4 parameter from a driver (JDBC setInt, node-postgres with a
-- typed parameter) found no function. An int parameter takes both, and a
-- smallint (`priority => 0::smallint`, the old contract) still reaches it by
-- the implicit smallint -> int cast. Overloading instead would make a call
-- that names only job_type ambiguous, so each function is replaced, not
-- added to: same names, same argument names and order, same results.
-- ---------------------------------------------------------------------------

drop function if exists pgjobs.enqueue(text, jsonb, text, text, smallint, timestamptz, text,
                                       bigint[], int, int);
drop function if exists pgjobs.enqueue_job(text, jsonb, text, text, smallint, timestamptz, text,
                                           bigint[], int, int);

-- Enqueue with the outcome spelled out: the new id, or the live duplicate's.
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
