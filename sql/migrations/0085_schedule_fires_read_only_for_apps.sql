-- Fire records are written by schedule_fire and trigger_schedule, which run as
-- the owner: an application needs only to read them, and unschedule (which
-- runs as the caller) to delete its schedule's. Before this an application
-- could insert a fire record for a tick not yet due and so make its own
-- schedule skip it.
revoke insert, update on pgjobs.schedule_fires from pgjobs_app;
