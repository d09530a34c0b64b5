-- The migration ledger: one row per file of sql/migrations/ a database has
-- (a fresh install records them all at once). pgjobs/migrate.py runs this file
-- first on every run, before it takes any lock, so it stays idempotent. Each
-- later step of a migrate locks this table for its transaction: that is how
-- concurrent runs take turns, and only a role that may write the ledger can
-- take or hold that lock.
create schema if not exists pgjobs;
create table if not exists pgjobs.schema_migrations (
    version    int primary key,
    name       text not null,
    applied_at timestamptz not null default now()
);
