-- 100 jobs in one statement and one wake-up for the statement.
with ins as (insert into work_jobs (payload) select '{}' from generate_series(1, :n) returning id)
select pg_notify('floor_wakeup', 'default') from (select count(*) from ins) c;
