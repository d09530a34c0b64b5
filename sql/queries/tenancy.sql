-- Tenant scope for pgjobs.tenant(): entered and left inside the caller's
-- transaction, never around it.

-- name: tenant_enter
-- Scopes the current transaction; returns the scope it had (empty: none) and
-- the transaction's start, to restore that scope in this transaction only.
-- OFFSET 0 keeps the subquery from being merged, so the previous value is read
-- before set_config changes it.
select s.previous, s.began, set_config('pgjobs.organization', %(organization)s, true)
  from (select coalesce(current_setting('pgjobs.organization', true), '') as previous,
               now() as began
        offset 0) as s;

-- name: tenant_restore
-- Puts back the scope tenant_enter found, if the transaction it was found in is
-- still the current one (now() is fixed per transaction); a block that ended
-- that transaction left nothing to restore.
select set_config('pgjobs.organization', %(previous)s, true) where now() = %(began)s;
