-- Statements behind the first-run checks (pgjobs/diagnose.py).

-- name: schema_installed
-- Read from the catalog, which every role may read, so the answer does not
-- depend on the caller's grants on the pgjobs schema.
select exists (
    select 1
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'pgjobs' and c.relname = 'jobs'
) as installed;

-- name: job_type_names_for_queues
-- The enabled job types a worker serving these queues is expected to run.
select name from pgjobs.job_types where enabled and queue = any(%(queues)s) order by name;
