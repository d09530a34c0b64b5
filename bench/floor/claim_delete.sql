-- Claim :n runnable rows (skipping those another client holds) and finish them
-- by deleting: what a queue that keeps no history must do per batch.
with c as (
    select id from jobs where state = 'queued'
     order by priority, run_at, id limit :n for update skip locked
)
delete from jobs j using c where j.id = c.id;
