-- The migration ledger itself. pgjobs/migrate.py applies this file with
-- IF NOT EXISTS before reading the ledger, so it is safe to run again.
create schema if not exists pgjobs;
create table if not exists pgjobs.schema_migrations (
    version    int primary key,
    name       text not null,
    applied_at timestamptz not null default now()
);
