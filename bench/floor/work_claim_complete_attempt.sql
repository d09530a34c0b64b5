-- As work_claim_complete.sql with one history row per attempt instead of one
-- per state change: the claim writes no history, the completion writes the
-- attempt's row.
with t as (select nextval('work_lease_token_seq') as token),
c as (
    select id from work_jobs where state = 'queued'
     order by priority, run_at, id limit :n for update skip locked
), u as (
    update work_jobs j
       set state = 'running', attempt = j.attempt + 1, worker = 'floor',
           lease_token = (select token from t), started_at = now(),
           lease_expires_at = now() + interval '30 seconds'
      from c where j.id = c.id
    returning j.id
)
select coalesce(array_agg(u.id), '{}') as ids, (select token from t) as token from u \gset
with u as (
    update work_jobs j
       set state = 'completed', finished_at = now(), lease_expires_at = null, result = null
     where j.id = any(:ids::bigint[]) and j.state = 'running' and j.lease_token = :token
    returning j.id, j.attempt
)
insert into work_events (job_id, attempt, from_state, to_state, worker)
select id, attempt, 'running', 'completed', 'floor' from u;
