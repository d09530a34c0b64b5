-- A worker process's server sessions, recorded with its row (issue 18): once
-- its lease expires the rescuer terminates them, so that a dead attempt's
-- query and the row locks of its transaction do not outlive it and hold up
-- the retry. Each session adds its own pg_backend_pid() when it connects;
-- the rescuer checks each pid's application_name against the worker's OS pid
-- before it acts, so a pid the server has since given to someone else is
-- left alone.
alter table pgjobs.worker_processes add column backend_pids int[] not null default '{}';
