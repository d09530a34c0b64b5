-- Statements of the migration runner (pgjobs/migrate.py).

-- name: migration_server_version
select current_setting('server_version_num')::int;

-- name: migration_ledger_lock
-- Concurrent migrate runs take turns here, one step's transaction at a time.
-- EXCLUSIVE conflicts with every writer and locker of the ledger but not with
-- its readers, and only a role that may write the ledger may take it.
lock table pgjobs.schema_migrations in exclusive mode;

-- name: migration_table_exists
select to_regclass('pgjobs.schema_migrations') is not null as present;

-- name: migration_versions
select version from pgjobs.schema_migrations order by version;

-- name: migration_record
insert into pgjobs.schema_migrations (version, name) values (%(version)s, %(name)s);
