-- The floor that does pgjobs' work per job (issue 19, deliverable 7): the
-- columns a lease needs, the history table, and the indexes the guarantees
-- need (the claim's partial index, lookups by id, the rescuer's view of the
-- running leases, a job's history by id). No triggers, no RLS, no dedup.
create table work_jobs (
    id               bigint generated always as identity primary key,
    queue            text not null default 'default',
    priority         smallint not null default 2,
    run_at           timestamptz not null default now(),
    state            text not null default 'queued',
    payload          jsonb not null default '{}',
    attempt          int not null default 0,
    worker           text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    result           jsonb
);
create index work_jobs_runnable_idx on work_jobs (priority, run_at, id) where state = 'queued';
create index work_jobs_running_idx on work_jobs (lease_expires_at) where state = 'running';
create sequence work_lease_token_seq;

create table work_events (
    id         bigint generated always as identity,
    job_id     bigint not null,
    attempt    int not null,
    from_state text,
    to_state   text not null,
    worker     text,
    at         timestamptz not null default now()
);
create index work_events_job_idx on work_events (job_id, id);
