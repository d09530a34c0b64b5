-- A child of two parents that completed in concurrent transactions stayed
-- `waiting` for ever: each completion's check "are all my child's parents
-- completed?" (jobs_after_update) ran on a snapshot where the other parent was
-- still running, and under READ COMMITTED neither saw the other commit.
--
-- The fix serializes those checks per child: a statement that completes jobs
-- first locks their waiting children, in id order (so two batches cannot
-- deadlock). A second completion of another parent of the same child waits
-- here until the first commits; its release check in jobs_after_update, a
-- later statement and so a fresh snapshot, then sees both parents completed.
-- Children of a completion nobody races are locked by the transaction that
-- releases them anyway, so the lock costs one index probe per statement.

create function pgjobs.jobs_lock_dependents() returns trigger
language plpgsql as $$
declare
    completed_ids bigint[];
begin
    select array_agg(n.id) into completed_ids
      from new_rows n join old_rows o on o.id = n.id
     where n.state = 'completed' and o.state <> 'completed';
    if completed_ids is null then
        return null;
    end if;
    perform 1 from pgjobs.jobs c
     where c.state = 'waiting' and c.depends_on && completed_ids
     order by c.id
       for update;
    return null;
end
$$;

-- Triggers on one event fire in name order: "jobs_after_completion_lock" runs
-- before "jobs_after_update", whose release check must come after the lock.
create trigger jobs_after_completion_lock
    after update on pgjobs.jobs
    referencing old table as old_rows new table as new_rows
    for each statement execute function pgjobs.jobs_lock_dependents();
