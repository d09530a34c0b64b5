-- The tables: job types, jobs, history, dedup keys, rate windows and worker
-- processes, with the indexes each reader needs.

-- Input limits (0010): the tables' constraints and the insert trigger use them.
-- statement_timeout holds at most 2,147,483 s and the worker adds a 1 s margin.
-- PL/pgSQL, not SQL (0110): Postgres folds an immutable call in a CHECK into
-- a constant again for every statement that writes the table, and an SQL
-- function is parsed and planned anew each time it is run that way, where a
-- PL/pgSQL one is compiled once per session.
create function pgjobs.max_timeout_seconds() returns int
language plpgsql immutable parallel safe as $$ begin return 2000000; end $$;

create function pgjobs.max_attempts_limit() returns int
language plpgsql immutable parallel safe as $$ begin return 1000; end $$;

-- A job type, queue or organization name: 1-200 characters, none of them a
-- control character (C0, DEL, C1), so a name prints as itself and its JSON
-- form in a NOTIFY is at most 4 bytes a character.
create function pgjobs.name_ok(name text) returns boolean
language sql immutable parallel safe as $$
    select length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f]'
$$;

-- Job types are data: defaults for every job of the type, and its handler.
create table pgjobs.job_types (
    name                 text primary key check (name <> '' and length(name) <= 200),
    handler              text not null check (handler ~ '^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$'),
    queue                text not null default 'default' check (queue <> '' and length(queue) <= 200),
    priority             smallint not null default 2 check (priority between 0 and 3),
    max_attempts         int not null default 5 check (max_attempts >= 1),
    timeout_seconds      int not null default 300 check (timeout_seconds >= 0),  -- 0 = no timeout
    dedup_window_seconds int not null default 0 check (dedup_window_seconds >= 0),  -- 0 = off
    dedup_by_payload     boolean not null default false,
    rate_limit           int check (rate_limit >= 0),                           -- NULL = unlimited
    rate_period_seconds  int not null default 60 check (rate_period_seconds > 0),
    retry_base_seconds   double precision not null default 1 check (retry_base_seconds >= 0),
    retry_cap_seconds    double precision not null default 3600 check (retry_cap_seconds >= 0),
    enabled              boolean not null default true,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    -- Who may cancel a job of this type: any member of its organization, or
    -- only the actor who created it (and pgjobs_admin).
    cancel_policy        text not null default 'organization'
        constraint job_types_cancel_policy_check check (cancel_policy in ('organization', 'creator')),
    constraint job_types_limits_check check (
        pgjobs.name_ok(name) and pgjobs.name_ok(queue)
        and max_attempts between 1 and pgjobs.max_attempts_limit()
        and timeout_seconds <= pgjobs.max_timeout_seconds()
        and dedup_window_seconds <= 3650 * 86400
        and rate_period_seconds <= 3650 * 86400
        and retry_base_seconds <= 365 * 86400 and retry_cap_seconds <= 365 * 86400)
);

create table pgjobs.jobs (
    -- Drawn from pgjobs.jobs_id_seq by the insert trigger, never taken from the
    -- caller: the worker finds jobs by id alone, so a tenant that could choose
    -- an id could make another organization's job share it.
    id                  bigint not null,
    job_type            text not null,
    organization        text,                       -- NULL: a system job
    queue               text not null,
    priority            smallint not null,
    payload             jsonb not null default '{}',
    state               text not null default 'queued',
    run_at              timestamptz not null default now(),
    attempt             int not null default 0,
    max_attempts        int not null,
    timeout_seconds     int not null,
    dedup_key           text,
    depends_on          bigint[],
    progress            numeric,
    progress_message    text,
    checkpoint          jsonb,
    result              jsonb,
    last_error          text,
    created_at          timestamptz not null default now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    canceled_by         text,
    -- internal: the attempt in flight and how the last one ended
    cancel_requested_at timestamptz,
    worker              text,
    lease_token         bigint,
    lease_expires_at    timestamptz,
    last_error_class    text,
    last_traceback      text,
    last_duration_ms    double precision,
    created_by          text default pgjobs.current_actor(),  -- NULL: made before it was recorded
    constraint jobs_state_check check (state in
        ('waiting', 'queued', 'running', 'retrying', 'completed', 'dead', 'canceled')),
    -- Every other rule on a row's values in one constraint: Postgres reads and
    -- prepares each CHECK of a table for every statement that writes it.
    -- Cheap tests only, since every claim and completion evaluates them again;
    -- names' characters and payloads are the triggers' (40_enqueue.sql).
    constraint jobs_values_check check (
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
        and (depends_on is null or cardinality(depends_on) <= 1000))
    -- Ids come from one sequence (the insert trigger draws every one), so they
    -- are unique across organizations and partitions without a unique key,
    -- which a partitioned table could only have with the state in it.
)
-- Finished work leaves the hot path (0060): unfinished jobs live in
-- jobs_active, the only partition the claim, the completions, lease renewal
-- and the rescue touch (each names the states it wants, so the planner prunes
-- to it); a job that finishes moves to jobs_finished, kept by period of
-- finished_at so that retention drops whole partitions (70_retention.sql).
partition by list (state);

create table pgjobs.jobs_active partition of pgjobs.jobs
    for values in ('waiting', 'queued', 'running', 'retrying')
-- Every claim and completion leaves a dead row version behind: vacuum the
-- unfinished jobs after a few thousand of them rather than a fifth of the
-- table, or the claim's index fills with dead entries it must step over.
with (autovacuum_vacuum_scale_factor = 0.0,
      autovacuum_vacuum_threshold = 5000,
      autovacuum_vacuum_cost_delay = 0);

-- One partition per period (pgjobs.partitions_ensure makes them ahead of
-- time); a row no period's partition holds (finished before partitioning, or
-- at a time none was made for) lands in the default one, so no completion
-- ever fails for want of a partition.
-- A finished job always holds a lease token (0: it never ran), which no new
-- row has: moving back to jobs_active (pgjobs.retry) fires that partition's
-- insert triggers, and jobs_before_insert must not take it for a new job.
create table pgjobs.jobs_finished partition of pgjobs.jobs (
    constraint jobs_finished_token_check check (lease_token is not null)
) for values in ('completed', 'dead', 'canceled')
    partition by range (finished_at);
create table pgjobs.jobs_finished_default partition of pgjobs.jobs_finished default;
-- Jobs finished before the schema had partitions of periods (a database from
-- before 0060 moves its finished rows here): everything up to the start of
-- the day it was installed. Retention empties it row by row; with it, the
-- default partition stays small, which making a partition reads whole.
do $$
begin
    execute format('create table pgjobs.jobs_finished_history partition of pgjobs.jobs_finished'
                   ' for values from (minvalue) to (%L)',
                   date_bin('1 day', now(), timestamptz '2000-01-03 00:00:00+00'));
end
$$;

-- The period of jobs_finished's partitions and how many are made ahead. One
-- row; the owner changes it (partitions already made keep their bounds).
create table pgjobs.partition_settings (
    singleton      boolean primary key default true check (singleton),
    period         interval not null default '1 day'
        check (period >= interval '1 hour' and period <= interval '31 days'
               and date_part('month', period) = 0 and date_part('year', period) = 0),
    periods_ahead  int not null default 3 check (periods_ahead between 1 and 100)
);
insert into pgjobs.partition_settings default values;

create sequence pgjobs.jobs_id_seq as bigint owned by pgjobs.jobs.id;

-- The claim reads only runnable rows: finished jobs cost it nothing.
create index jobs_runnable_idx on pgjobs.jobs (priority, run_at, id)
    where state in ('queued', 'retrying');
-- The rescuer reads only running rows with a lease, all in jobs_active. Only
-- the rescuer (lease_expires_at < now) may use it: a statement that names
-- jobs by id and wants running ones (the completions, lease renewal,
-- progress) does not imply lease_expires_at is not null, so it cannot take
-- this index for a walk over every running row, dead versions included,
-- filtering by id. Their generic plans, made while the table was short, chose
-- just that, and under a held xmin horizon each of them then stepped over
-- every job claimed since. pgjobs.complete_many (50_claim.sql) keeps the
-- completion off the sequential scan that is then left.
create index jobs_running_lease_idx on pgjobs.jobs_active (lease_expires_at)
    where state = 'running' and lease_expires_at is not null;
-- A completion locks the waiting children of its jobs in id order
-- (jobs_after_update): this walk in id order reads waiting rows only. Without
-- it the plan walked jobs_id_idx over every unfinished row, dead versions
-- included, on every completion (30,000 entries for a 10-job completion with
-- 30,000 jobs queued; under a held xmin horizon, more with every job done).
create index jobs_waiting_id_idx on pgjobs.jobs_active (id)
    where state = 'waiting';
-- Parents find their waiting children.
create index jobs_waiting_parents_idx on pgjobs.jobs using gin (depends_on)
    where state = 'waiting';
-- Lookups by id, one probe per partition; and listing per organization.
create index jobs_id_idx on pgjobs.jobs (id);
-- Every reader names an organization (`organization = X` implies the
-- predicate); a system job is never looked up by (organization, id), so it
-- takes no entry here (0200): one B-tree fewer per row of a bulk enqueue.
create index jobs_organization_id_idx on pgjobs.jobs (organization, id)
    where organization is not null;
-- Retention finds old finished rows. The states are pgjobs.is_finished's
-- (30_state_machine.sql): the planner inlines that function, so a query that
-- filters with it matches this predicate.
create index jobs_finished_idx on pgjobs.jobs (finished_at)
    where state in ('completed', 'dead', 'canceled');

-- One token per claim: a worker's statements on a job name the token of the
-- claim they belong to, so a lease lost and claimed again is never ended twice.
create sequence pgjobs.lease_token_seq;

-- One row per state change and per finished attempt.
create table pgjobs.job_events (
    id            bigint generated always as identity,  -- order of events
    job_id        bigint not null,
    organization  text,
    job_type      text not null,
    attempt       int not null,
    from_state    text,
    to_state      text not null,
    worker        text,
    error_class   text,
    message       text,
    traceback     text,
    duration_ms   double precision,
    at            timestamptz not null default now(),
    -- Who made the change: a column default, so every writer of history
    -- records the actor of the transaction that moved the job.
    actor         text default pgjobs.current_actor()
) partition by range (at);
create index job_events_job_idx on pgjobs.job_events (job_id, id);
-- Time windows (views, retention): rows arrive in time order, so a BRIN index
-- serves them at a fraction of a btree's cost per insert.
create index job_events_at_idx on pgjobs.job_events using brin (at);

-- History leaves the hot path as finished jobs do (0090): one partition per
-- period of `at`, the periods of pgjobs.partition_settings, made ahead by
-- pgjobs.partitions_ensure and dropped whole by retention
-- (pgjobs.partition_drop_oldest), the rows of jobs it keeps moved out first.
-- A row no period's partition holds lands in the default one, so no history
-- write ever fails for want of a partition; the events of a kept job whose
-- period was dropped live there too.
create table pgjobs.job_events_default partition of pgjobs.job_events default;
-- History written before the schema had partitions of periods (a database
-- from before 0090 moves its rows here): everything up to the start of the
-- day it was installed. Dropped whole once retention passes its end.
do $$
begin
    execute format('create table pgjobs.job_events_history partition of pgjobs.job_events'
                   ' for values from (minvalue) to (%L)',
                   date_bin('1 day', now(), timestamptz '2000-01-03 00:00:00+00'));
end
$$;

-- Dedup: one row per live key. The primary key makes concurrent identical
-- enqueues race-free; a key is taken over only once its job is finished and
-- its window has passed (ON CONFLICT ... DO UPDATE ... WHERE).
create table pgjobs.dedup_keys (
    organization text not null,          -- '' for system jobs
    job_type     text not null,
    dedup_key    text not null,
    job_id       bigint not null,
    active       boolean not null,       -- the job is not finished yet
    expires_at   timestamptz not null,   -- created_at + dedup window
    primary key (organization, job_type, dedup_key)
);

-- Rate limiting: a fixed window per (organization, job type), counted at claim.
create table pgjobs.rate_windows (
    organization text not null,          -- '' for system jobs
    job_type     text not null,
    window_start timestamptz not null,
    used         int not null,
    primary key (organization, job_type)
);

-- Worker processes and their heartbeats (pgjobs.workers is the view).
create table pgjobs.worker_processes (
    name         text primary key,
    host         text not null,
    pid          int not null,
    queues       text[] not null,
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    -- The job types the process has handlers for (NULL: a worker from before
    -- this column, which may run any type).
    job_types    text[],
    -- Its server sessions (each adds its pg_backend_pid() as it connects): the
    -- rescuer terminates them once the process's lease expires.
    backend_pids int[] not null default '{}'
);

-- Whose turn it is at each maintenance duty, until when (rescue, prune,
-- vacuum). A row, not an advisory lock: only pgjobs_worker may write it (a
-- stranger can take any advisory lock key), and it works through a
-- transaction-mode pooler. Taken and renewed by a guarded upsert, released by
-- its holder, expiring when the holder dies (sql/queries/maintenance.sql).
create table pgjobs.maintenance_leases (
    duty       text primary key check (duty in ('rescue', 'prune', 'vacuum')),
    holder     text check (length(holder) <= 300),
    expires_at timestamptz,
    check ((holder is null) = (expires_at is null))
);

comment on table pgjobs.maintenance_leases is
    'Whose turn it is at each maintenance duty (rescue, prune, vacuum), until when.';

-- State events waiting for the relay (pgjobs.state_relay): one row per UPDATE
-- statement of a worker's session, its events as the pgjobs_state payloads.
-- Unlogged, as NOTIFY is: a server crash loses what was not sent yet, and no
-- row of it costs a WAL record.
create unlogged table pgjobs.state_outbox (
    id     bigint generated always as identity primary key,
    events text[] not null
);
