-- Session setup: every worker connection, a job's own transaction, wake-ups.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: session_configure
-- Every worker session bounds its statements and idle transactions, and may
-- commit asynchronously and do without JIT compilation (NULL: as the server says).
select set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false),
       set_config('application_name', %(application_name)s, false),
       set_config('synchronous_commit',
                  coalesce(%(synchronous_commit)s, current_setting('synchronous_commit')), false),
       set_config('jit', coalesce(%(jit)s, current_setting('jit')), false),
       -- The state events of the worker's sessions go through the relay
       -- (pgjobs/worker/relay.py), never from their own commits.
       set_config('pgjobs.relay_state_events', 'on', false);

-- name: transaction_configure
-- session_configure for one transaction (pooler mode): the same settings, set
-- transaction-locally, so that none outlives the transaction on a server
-- connection the pool then hands to another client. Sent before each
-- statement, it acts once per transaction (a transaction-local marker says it
-- did), so what the transaction sets itself afterwards (a job's own
-- statement_timeout) stands.
select set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true),
       set_config('application_name', %(application_name)s, true),
       set_config('synchronous_commit',
                  coalesce(%(synchronous_commit)s, current_setting('synchronous_commit')), true),
       set_config('jit', coalesce(%(jit)s, current_setting('jit')), true),
       set_config('pgjobs.relay_state_events', 'on', true),
       set_config('pgjobs.transaction_configured', 'on', true)
 where current_setting('pgjobs.transaction_configured', true) is distinct from 'on';

-- name: session_backend_pid
-- Compared with the process id announced at connection: a pooler answers with
-- an id of its own (PgBouncer's is random), so the two differ behind one.
select pg_backend_pid();

-- name: job_transaction_begin
-- A handler's transaction: scoped to the job's organization (row-level security
-- then shows even a worker that one organization), bounded by its timeout.
select set_config('pgjobs.organization', %(organization)s, true),
       set_config('statement_timeout', %(statement_timeout)s, true);

-- name: wakeup_listen
-- A worker LISTENs only while idle: every LISTENing session reads every
-- notification of its database.
listen pgjobs_wakeup;

-- name: wakeup_unlisten
unlisten pgjobs_wakeup;

-- name: cancel_listen
-- The supervisor learns of cancel requests here and tells the process concerned.
listen pgjobs_cancel;
