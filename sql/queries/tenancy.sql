-- Tenant scope, transaction-local.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: tenant_get
select pgjobs.current_organization();

-- name: tenant_set
-- Transaction-local: the scope ends with the transaction.
select set_config('pgjobs.organization', %(organization)s, true);
