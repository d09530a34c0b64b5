-- Statements behind pgjobs.schedules (periodic jobs). %(now)s is an optional
-- clock: NULL means the database's now(), the only clock schedules follow.

-- name: schedule_upsert
-- Creates or updates a schedule; the next fire time comes back.
select pgjobs.schedule(name => %(name)s::text, job_type => %(job_type)s::text,
                       cron => %(cron)s::text, payload => %(payload)s::jsonb,
                       organization => %(organization)s::text,
                       timezone => %(timezone)s::text, catch_up => %(catch_up)s::int)
       as next_fire_at;

-- name: schedule_delete
select pgjobs.unschedule(%(name)s::text, %(organization)s::text) as done;

-- name: schedule_pause
select pgjobs.pause_schedule(%(name)s::text, %(organization)s::text) as state;

-- name: schedule_resume
select pgjobs.resume_schedule(%(name)s::text, %(organization)s::text) as next_fire_at;

-- name: schedule_trigger
select pgjobs.trigger_schedule(%(name)s::text, %(organization)s::text) as job_id;

-- name: schedule_list
-- Every schedule the session may see, with its last job's state.
select * from pgjobs.schedule_status
 where %(organization)s::text is null or organization = %(organization)s::text
 order by organization nulls first, name;

-- name: schedule_due_lock
-- The due, enabled schedules no other worker is firing right now, locked
-- until this transaction ends; with the instant they are due by.
select s.organization, s.name, s.cron, s.timezone, s.next_fire_at, s.catch_up,
       coalesce(%(now)s::timestamptz, now()) as now
  from pgjobs.schedules s
 where s.enabled and s.next_fire_at <= coalesce(%(now)s::timestamptz, now())
 order by s.next_fire_at
 limit %(limit)s
   for update skip locked;

-- name: schedule_fire
-- Fires the plan for the schedules locked above (pgjobs.schedule_fire).
select * from pgjobs.schedule_fire(%(fires)s::jsonb, %(now)s::timestamptz);

-- name: schedule_next_due
-- Seconds until the soonest enabled schedule is due (NULL: none).
select extract(epoch from min(next_fire_at) - coalesce(%(now)s::timestamptz, now()))::float8
       as seconds
  from pgjobs.schedules
 where enabled;

-- name: schedule_declare
-- The system schedule a job type declares with its handler (@pgjobs.job(...,
-- schedule=)): named after the type; unchanged cron and zone keep the next
-- fire time (the write trigger recomputes it only when they change).
insert into pgjobs.schedules as s (name, organization, job_type, cron, timezone, next_fire_at)
values (%(name)s, null, %(name)s, %(cron)s, %(timezone)s, 'infinity')
on conflict (organization, name) do update
   set job_type = excluded.job_type, cron = excluded.cron, timezone = excluded.timezone
 where (s.job_type, s.cron, s.timezone)
       is distinct from (excluded.job_type, excluded.cron, excluded.timezone);
