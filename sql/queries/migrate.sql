-- Statements of the migration runner (pgjobs/migrate.py).

-- name: migration_lock
-- Serializes concurrent migrate runs on one database.
select pg_advisory_lock(%(key)s);

-- name: migration_unlock
select pg_advisory_unlock(%(key)s);

-- name: migration_table_exists
select to_regclass('pgjobs.schema_migrations') is not null as present;

-- name: migration_versions
select version from pgjobs.schema_migrations order by version;

-- name: migration_record
insert into pgjobs.schema_migrations (version, name) values (%(version)s, %(name)s);
