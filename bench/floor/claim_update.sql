-- Claim :n runnable rows and finish them by marking them done (history kept).
with c as (
    select id from jobs where state = 'queued'
     order by priority, run_at, id limit :n for update skip locked
)
update jobs j set state = 'done' from c where j.id = c.id;
