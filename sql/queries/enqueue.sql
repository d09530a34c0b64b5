-- Enqueue: one job or many, through the database's own enqueue functions.
-- Parameters are psycopg named placeholders; nothing is ever formatted in.
-- %(now)s, where taken, is an optional clock: NULL means the database's now().

-- name: job_enqueue
-- One job through pgjobs.enqueue_job: the new id, or the live duplicate's.
select id, duplicate
  from pgjobs.enqueue_job(job_type => %(job_type)s::text, payload => %(payload)s::jsonb,
                          organization => %(organization)s::text, queue => %(queue)s::text,
                          priority => %(priority)s::smallint, run_at => %(run_at)s::timestamptz,
                          dedup_key => %(dedup_key)s::text, depends_on => %(depends_on)s::bigint[],
                          max_attempts => %(max_attempts)s::int,
                          timeout_seconds => %(timeout_seconds)s::int);

-- name: job_enqueue_many
-- Many jobs in one INSERT; one row per input, in input order.
select ord, id, duplicate from pgjobs.enqueue_jobs(%(jobs)s::jsonb);

-- name: job_enqueue_plain
-- Plain jobs set-based through pgjobs.enqueue_plain: a column the jobs share
-- as an array of one value, the others as typed arrays sent in binary, the
-- payloads as one JSON array text (one string to send rather than one per
-- job): the new ids in input order, or NULL when the batch is not plain
-- (nothing written).
select pgjobs.enqueue_plain(
           job_type => %(job_type)b::text[],
           payload => (select array_agg(p.value order by p.ord)
                         from jsonb_array_elements(%(payloads)s::jsonb)
                              with ordinality as p(value, ord)),
           organization => %(organization)b::text[], queue => %(queue)b::text[],
           priority => %(priority)b::smallint[], run_at => %(run_at)b::timestamptz[],
           max_attempts => %(max_attempts)b::int[],
           timeout_seconds => %(timeout_seconds)b::int[]);

-- name: job_enqueue_plain_head
-- job_enqueue_plain for a batch whose jobs share every column but the
-- payload (what pgjobs.enqueue_many sends for a list of one kind of job):
-- each shared column as a scalar made an array of one value here, which
-- costs the client no array to build (a NULL value is NULL for every job,
-- as a NULL array is).
select pgjobs.enqueue_plain(
           job_type => array[%(job_type)s::text],
           payload => (select array_agg(p.value order by p.ord)
                         from jsonb_array_elements(%(payloads)s::jsonb)
                              with ordinality as p(value, ord)),
           organization => array[%(organization)s::text], queue => array[%(queue)s::text],
           priority => array[%(priority)s::smallint],
           run_at => array[%(run_at)s::timestamptz],
           max_attempts => array[%(max_attempts)s::int],
           timeout_seconds => array[%(timeout_seconds)s::int]);
