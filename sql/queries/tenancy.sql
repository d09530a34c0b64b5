-- Tenant scope, transaction-local: set_organization sets it, pgjobs.tenant()
-- enters and leaves it inside the caller's transaction, never around it.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.

-- name: tenant_get
select pgjobs.current_organization();

-- name: tenant_set
-- Transaction-local: the scope ends with the transaction.
select set_config('pgjobs.organization', %(organization)s, true);

-- name: actor_set
-- Transaction-local, like the organization: who acts (jobs.created_by, history actor).
select set_config('pgjobs.actor', %(actor)s, true);

-- name: tenant_enter
-- Scopes the current transaction (and names its actor, when one is given);
-- returns the scope and actor it had (empty: none) and the transaction's start,
-- to restore both in this transaction only. OFFSET 0 keeps the subquery from
-- being merged, so the previous values are read before set_config changes them.
select s.previous, s.previous_actor, s.began,
       set_config('pgjobs.organization', %(organization)s, true),
       set_config('pgjobs.actor', coalesce(%(actor)s::text, s.previous_actor), true)
  from (select coalesce(current_setting('pgjobs.organization', true), '') as previous,
               coalesce(current_setting('pgjobs.actor', true), '') as previous_actor,
               now() as began
        offset 0) as s;

-- name: tenant_restore
-- Puts back the scope and actor tenant_enter found, if the transaction it was
-- found in is still the current one (now() is fixed per transaction); a block
-- that ended that transaction left nothing to restore.
select set_config('pgjobs.organization', %(previous)s, true),
       set_config('pgjobs.actor', %(previous_actor)s, true)
 where now() = %(began)s;
