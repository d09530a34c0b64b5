-- The state-change trigger and take() find rows through indexes only.
--
-- Their plans are cached for the session, and a plan made while the jobs
-- table was small may be a sequential scan: the cheapest way to read a few
-- pages. The trigger's lookup of the waiting children of completed jobs then
-- read the whole table on every completion until autoanalyze happened to
-- invalidate the plan, so a worker that started on a short table slowed down
-- as its table grew (a third fewer claim-and-complete cycles after 25 seconds
-- in one session). Both only ever look rows up by id or through the partial
-- index on waiting children, so a sequential scan is never the right plan.

alter function pgjobs.jobs_after_update() set enable_seqscan = off;
alter function pgjobs.take(text, bigint[], double precision, timestamptz)
    set enable_seqscan = off;
