-- The least a Postgres queue needs: one table, a partial index on what is runnable.
create table jobs (
    id       bigint generated always as identity primary key,
    queue    text not null default 'default',
    priority smallint not null default 2,
    run_at   timestamptz not null default now(),
    state    text not null default 'queued',
    payload  jsonb not null default '{}'
);
create index jobs_runnable_idx on jobs (priority, run_at, id) where state = 'queued';
