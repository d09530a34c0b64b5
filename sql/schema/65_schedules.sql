-- Periodic jobs: schedules as rows, fired once per tick by
-- whichever worker is alive, under the same row-level security as jobs.
--
-- Cron semantics are cronsim's (the Python library the workers advance
-- schedules with). SQL cannot call it, yet pgjobs.schedule() must validate an
-- expression and answer its next fire time, so this file carries a compact
-- evaluator of the same grammar and the same daylight-saving rules:
-- pgjobs.cron_parse / pgjobs.cron_next. tests/test_schedules_cron.py holds
-- the two to the same answers on random expressions, instants and time zones
-- (DST days included). SQL computes a schedule's first fire time (and the one
-- after a resume or an edit); the worker computes every later one with
-- cronsim (pgjobs/schedules/fire.py).
--
-- Grammar (cronsim's): five fields (minute hour day-of-month month
-- day-of-week) or six with seconds FIRST; `*`, numbers, names (JAN-DEC,
-- SUN-SAT), ranges a-b, steps x/n, lists; `L` and `LW` as the day of month;
-- `5L` (last Friday) and `5#2` (second Friday) as the day of week. Day of
-- month and day of week are ANDed when either starts with `*`, else ORed.
-- Time zones: a 5-field expression at a fixed minute and hour follows
-- Debian cron: a time skipped by spring-forward fires at the first valid
-- instant after it, a time repeated by fall-back fires once (the first).
-- Every other expression matches real instants by their local wall clock.
--
-- Row-level security, owner and grants of these tables: 90_security.sql.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

create table pgjobs.schedules (
    name          text not null check (name <> '' and length(name) <= 200),
    organization  text check (organization <> ''),   -- NULL: a system schedule
    job_type      text not null,
    cron          text not null check (length(cron) <= 1000),
    timezone      text not null default 'UTC',
    payload       jsonb not null default '{}',
    enabled       boolean not null default true,
    -- After downtime (no worker, or paused), how many of the latest missed
    -- ticks become jobs: 1 (the latest only) unless the schedule asks for more.
    catch_up      int not null default 1 check (catch_up between 1 and 1000),
    next_fire_at  timestamptz not null,
    last_fired_at timestamptz,             -- the last cron tick that fired
    last_job_id   bigint,                  -- the last job made (a tick's or a trigger's)
    last_error    text,                    -- why the last fire made no job, if it did not
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint schedules_organization_name_key unique nulls not distinct (organization, name)
);
-- The firing statement reads only due, enabled schedules.
create index schedules_due_idx on pgjobs.schedules (next_fire_at) where enabled;

-- One row per fire. The unique index is the guarantee: a tick of a schedule
-- becomes at most one job, whatever the number of workers, their clocks,
-- restarts or crashes mid-fire (the row commits with the job or not at all).
-- Manual triggers are recorded too, outside that key.
create table pgjobs.schedule_fires (
    organization text not null,            -- '' for system schedules (as dedup_keys)
    schedule     text not null,
    fire_at      timestamptz not null,     -- the tick (or, when manual, the trigger time)
    manual       boolean not null default false,
    job_id       bigint,
    duplicate    boolean not null default false,  -- the enqueue found a live duplicate
    fired_at     timestamptz not null default now()
);
create unique index schedule_fires_tick_key
    on pgjobs.schedule_fires (organization, schedule, fire_at) where not manual;
create index schedule_fires_schedule_idx on pgjobs.schedule_fires (organization, schedule, fired_at);

-- ---------------------------------------------------------------------------
-- The cron evaluator
-- ---------------------------------------------------------------------------

-- A parsed expression. Day of month: -1 is L, -2 is LW. Day of week 0-7
-- (0 and 7 are Sunday); weekdays_last holds the weekdays written `dL`,
-- weekdays_nth the `d#n` ones as d * 10 + n.
create type pgjobs.cron_spec as (
    seconds       int[],
    minutes       int[],
    hours         int[],
    days          int[],
    months        int[],
    weekdays      int[],
    weekdays_last int[],
    weekdays_nth  int[],
    day_and       boolean,   -- both day fields must match (either starts with *)
    wall_clock    boolean    -- Debian's DST rule: 5 fields, fixed minute and hour
);

create function pgjobs.cron_error(field int) returns void
language plpgsql immutable as $$
begin
    raise exception 'pgjobs: bad cron expression: bad %',
        (array['second', 'minute', 'hour', 'day-of-month', 'month', 'day-of-week'])[field + 1]
        using errcode = 'PJ001';
end
$$;

-- A plain number: digits only, any length (leading zeros allowed).
create function pgjobs.cron_int(s text, field int) returns int
language plpgsql immutable as $$
declare
    digits text := ltrim(s, '0');
begin
    if s !~ '^[0-9]+$' then
        perform pgjobs.cron_error(field);
    end if;
    if length(digits) > 9 then
        return 1000000000;  -- out of every range; as a step, larger than any
    end if;
    return coalesce(nullif(digits, ''), '0')::int;
end
$$;

-- One value of a field: a number in the field's range, or a month or day name.
create function pgjobs.cron_value(s text, field int) returns int
language plpgsql immutable as $$
declare
    v   int;
    low int := (array[0, 0, 0, 1, 1, 0])[field + 1];
    high int := (array[59, 59, 23, 31, 12, 7])[field + 1];
begin
    if field = 4 then
        v := array_position(array['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG',
                                  'SEP', 'OCT', 'NOV', 'DEC'], s);
        if v is not null then
            return v;
        end if;
    elsif field = 5 then
        v := array_position(array['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'], s);
        if v is not null then
            return v - 1;
        end if;
    end if;
    v := pgjobs.cron_int(s, field);
    if v not between low and high then
        perform pgjobs.cron_error(field);
    end if;
    return v;
end
$$;

-- One field's text into its set of values, sorted. Day-of-week `dL` is coded
-- 100 + d and `d#n` 1000 + d * 10 + n; cron_parse splits them out.
create function pgjobs.cron_field(s text, field int) returns int[]
language plpgsql immutable as $$
declare
    low   int := (array[0, 0, 0, 1, 1, 0])[field + 1];
    high  int := (array[59, 59, 23, 31, 12, 7])[field + 1];
    items int[];
    term  text;
    step  int;
    a     int;
    b     int;
    nth   int;
begin
    if s = '*' then
        return array(select generate_series(low, high));
    end if;
    if position(',' in s) > 0 then
        items := '{}';
        foreach term in array string_to_array(s, ',') loop
            items := items || pgjobs.cron_field(term, field);
        end loop;
        return array(select distinct x from unnest(items) x order by x);
    end if;
    if field = 5 and position('L' in s) > 0 then
        if left(s, -1) !~ '^[0-9]+$' then
            perform pgjobs.cron_error(field);
        end if;
        return array[100 + pgjobs.cron_value(left(s, -1), field)];
    end if;
    if field = 5 and position('#' in s) > 0 then
        nth := pgjobs.cron_int(substr(s, position('#' in s) + 1), field);
        if nth not between 1 and 5 then
            perform pgjobs.cron_error(field);
        end if;
        return array[1000 + pgjobs.cron_value(split_part(s, '#', 1), field) * 10 + nth];
    end if;
    if position('/' in s) > 0 then
        step := pgjobs.cron_int(substr(s, position('/' in s) + 1), field);
        if step = 0 then
            perform pgjobs.cron_error(field);
        end if;
        items := pgjobs.cron_field(split_part(s, '/', 1), field);
        if field = 3 and items in (array[-1], array[-2]) then
            return items;  -- L/n and LW/n are L and LW
        end if;
        if cardinality(items) = 1 then  -- a start: from it to the field's end
            return array(select generate_series(items[1], high, step));
        end if;
        return array(select items[i] from generate_series(1, cardinality(items), step) i);
    end if;
    if position('-' in s) > 0 then
        a := pgjobs.cron_value(split_part(s, '-', 1), field);
        b := pgjobs.cron_value(substr(s, position('-' in s) + 1), field);
        if b < a then
            perform pgjobs.cron_error(field);
        end if;
        return array(select generate_series(a, b));
    end if;
    if field = 3 and s = 'LW' then
        return array[-2];
    end if;
    if field = 3 and s = 'L' then
        return array[-1];
    end if;
    return array[pgjobs.cron_value(s, field)];
end
$$;

-- Parses and checks an expression; PJ001 (InvalidJob) when it is not valid.
create function pgjobs.cron_parse(cron text) returns pgjobs.cron_spec
language plpgsql immutable as $$
declare
    parts text[] := regexp_split_to_array(btrim(upper(cron), E' \t\n\r\f\v'), E'[ \t\n\r\f\v]+');
    five  boolean;
    dow   int[];
    spec  pgjobs.cron_spec;
begin
    if cron is null then
        raise exception 'pgjobs: a cron expression is required' using errcode = 'PJ001';
    end if;
    five := cardinality(parts) = 5;
    if five then
        parts := array['0'] || parts;
    end if;
    if cardinality(parts) <> 6 then
        raise exception 'pgjobs: bad cron expression %: wrong number of fields (5, or 6 with seconds first)',
            cron using errcode = 'PJ001';
    end if;
    spec.seconds := pgjobs.cron_field(parts[1], 0);
    spec.minutes := pgjobs.cron_field(parts[2], 1);
    spec.hours   := pgjobs.cron_field(parts[3], 2);
    spec.days    := pgjobs.cron_field(parts[4], 3);
    spec.months  := pgjobs.cron_field(parts[5], 4);
    dow          := pgjobs.cron_field(parts[6], 5);
    spec.weekdays      := array(select d from unnest(dow) d where d < 100);
    spec.weekdays_last := array(select d - 100 from unnest(dow) d where d between 100 and 999);
    spec.weekdays_nth  := array(select d - 1000 from unnest(dow) d where d >= 1000);
    spec.day_and := left(parts[4], 1) = '*' or left(parts[6], 1) = '*';
    spec.wall_clock := five and left(parts[2], 1) <> '*' and left(parts[3], 1) <> '*';
    -- A day no chosen month has (30 February) can never match.
    if spec.day_and and (select min(d) from unnest(spec.days) d) > 29
       and (select min(d) from unnest(spec.days) d)
           > (select max((array[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[m])
                from unnest(spec.months) m) then
        perform pgjobs.cron_error(3);
    end if;
    return spec;
end
$$;

create function pgjobs.cron_day_matches(spec pgjobs.cron_spec, d date) returns boolean
language plpgsql immutable as $$
declare
    last_day date := (date_trunc('month', d) + interval '1 month - 1 day')::date;
    dow      int := extract(isodow from d)::int;  -- Monday 1 .. Sunday 7
    dom_ok   boolean;
    dow_ok   boolean;
    nth      int := (extract(day from d)::int + 6) / 7;
    lw       date;
begin
    dom_ok := extract(day from d)::int = any(spec.days)
              or (-1 = any(spec.days) and d = last_day);
    if not dom_ok and -2 = any(spec.days) then
        lw := last_day - case extract(isodow from last_day)::int when 7 then 2 when 6 then 1
                         else 0 end;
        dom_ok := d = lw;
    end if;
    dow_ok := dow = any(spec.weekdays) or dow % 7 = any(spec.weekdays)
              or ((dow = any(spec.weekdays_last) or dow % 7 = any(spec.weekdays_last))
                  and d + 7 > last_day)
              or (dow * 10 + nth = any(spec.weekdays_nth)
                  or (dow % 7) * 10 + nth = any(spec.weekdays_nth));
    if spec.day_and then
        return dom_ok and dow_ok;
    end if;
    return dom_ok or dow_ok;
end
$$;

-- The first matching time of day after `after` (any time of day when NULL).
create function pgjobs.cron_next_time(spec pgjobs.cron_spec, after time) returns interval
language plpgsql immutable as $$
declare
    h int;
    m int;
    s int;
    h0 int := extract(hour from after)::int;
    m0 int := extract(minute from after)::int;
    s0 int := floor(extract(second from after))::int;
    first_s int := (select min(x) from unnest(spec.seconds) x);
    first_m int := (select min(x) from unnest(spec.minutes) x);
begin
    if after is null then
        return make_interval(hours => (select min(x) from unnest(spec.hours) x),
                             mins => first_m, secs => first_s);
    end if;
    if h0 = any(spec.hours) then
        if m0 = any(spec.minutes) then
            s := (select min(x) from unnest(spec.seconds) x where x > s0);
            if s is not null then
                return make_interval(hours => h0, mins => m0, secs => s);
            end if;
        end if;
        m := (select min(x) from unnest(spec.minutes) x where x > m0);
        if m is not null then
            return make_interval(hours => h0, mins => m, secs => first_s);
        end if;
    end if;
    h := (select min(x) from unnest(spec.hours) x where x > h0);
    if h is not null then
        return make_interval(hours => h, mins => first_m, secs => first_s);
    end if;
    return null;
end
$$;

-- The first local wall-clock time strictly after `after` that matches, on the
-- plain calendar; NULL when none comes within 50 years (as cronsim).
create function pgjobs.cron_next_wall(spec pgjobs.cron_spec, after timestamp) returns timestamp
language plpgsql immutable as $$
declare
    d        date := after::date;
    lower    time := date_trunc('second', after)::time;
    last_year int := extract(year from after)::int + 50;
    tod      interval;
begin
    loop
        if extract(year from d) > last_year then
            return null;
        end if;
        if not extract(month from d)::int = any(spec.months) then
            d := (date_trunc('month', d) + interval '1 month')::date;
            lower := null;
            continue;
        end if;
        if pgjobs.cron_day_matches(spec, d) then
            tod := pgjobs.cron_next_time(spec, lower);
            if tod is not null then
                return d + tod;
            end if;
        end if;
        d := d + 1;
        lower := null;
    end loop;
end
$$;

-- The UTC offset in force at an instant.
create function pgjobs.tz_offset(t timestamptz, zone text) returns interval
language sql stable as $$
    select (t at time zone zone) - (t at time zone 'UTC')
$$;

-- The earliest instant whose local time is `wall`; NULL if the wall time does
-- not exist (skipped by a spring-forward).
create function pgjobs.tz_first_instant(wall timestamp, zone text) returns timestamptz
language sql stable as $$
    select min(c) from (
        select (wall - pgjobs.tz_offset(p, zone)) at time zone 'UTC' as c
          from (select wall at time zone zone as base) b,
               lateral (values (b.base), (b.base - interval '3 hours'),
                               (b.base + interval '3 hours')) as probe(p)
    ) cands
     where c at time zone zone = wall
$$;

-- The next fire time strictly after `after`: cronsim's answer.
create function pgjobs.cron_next(cron text, timezone text, after timestamptz)
returns timestamptz language plpgsql stable as $$
declare
    spec   pgjobs.cron_spec := pgjobs.cron_parse(cron);
    zone   text := cron_next.timezone;
    w      timestamp;
    t      timestamptz;
    start  timestamptz;
    probe  timestamptz;
    lo     timestamptz;
    hi     timestamptz;
    mid    timestamptz;
    o      interval;
begin
    if spec.wall_clock then
        -- Debian's rule: walk the wall clock; a skipped time fires at the first
        -- valid minute after it, a repeated one at its first occurrence.
        w := date_trunc('second', after at time zone zone);
        loop
            w := pgjobs.cron_next_wall(spec, w);
            if w is null then
                return null;
            end if;
            loop
                t := pgjobs.tz_first_instant(w, zone);
                exit when t is not null;
                w := w + interval '1 minute';
            end loop;
            if t > after then
                return t;
            end if;
        end loop;
    end if;
    -- Real instants whose local time matches. Between two offset changes the
    -- wall clock is the instant plus a constant, so: the next matching wall
    -- time under the current offset, unless the offset changes first (found
    -- by halving), from where the search starts again under the new offset.
    start := date_trunc('second', after) + interval '1 second';
    o := pgjobs.tz_offset(start, zone);
    w := pgjobs.cron_next_wall(spec, (start at time zone zone) - interval '1 second');
    loop
        if w is null then
            return null;
        end if;
        t := (w - o) at time zone 'UTC';
        -- Offsets change at most twice a year: probing every 20 days finds each change.
        probe := least(t, start + interval '20 days');
        if pgjobs.tz_offset(probe, zone) = o then
            if probe = t then
                return t;
            end if;
            start := probe;
            continue;
        end if;
        lo := start;
        hi := probe;
        while hi - lo > interval '1 second' loop
            mid := lo + date_trunc('second', (hi - lo) / 2);
            if pgjobs.tz_offset(mid, zone) = o then
                lo := mid;
            else
                hi := mid;
            end if;
        end loop;
        start := hi;
        o := pgjobs.tz_offset(start, zone);
        w := pgjobs.cron_next_wall(spec, (start at time zone zone) - interval '1 second');
    end loop;
end
$$;

-- An IANA zone name exactly as zoneinfo spells it (PostgreSQL alone would also
-- take 'europe/berlin' or a POSIX string, which the workers could not read).
create function pgjobs.check_timezone(zone text) returns void
language plpgsql stable as $$
begin
    if zone is null or zone !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$'
       or not exists (select from pg_timezone_names n where n.name = zone) then
        raise exception 'pgjobs: unknown time zone %', coalesce(quote_literal(zone), 'NULL')
            using errcode = 'PJ001';
    end if;
end
$$;

-- ---------------------------------------------------------------------------
-- Every write of a schedule is checked here, for the functions and a plain
-- INSERT or UPDATE alike.
-- ---------------------------------------------------------------------------

create function pgjobs.schedules_before_write() returns trigger
language plpgsql as $$
declare
    scope   text := pgjobs.current_organization();
    t       pgjobs.job_types;
    problem text;
begin
    if tg_op = 'INSERT' then
        new.organization := coalesce(new.organization, scope);
    end if;
    -- As for jobs (0011_client_contract.sql): no scope is PJ004
    -- (pgjobs.no_organization), another organization is insufficient_privilege.
    if scope is null and not pgjobs.sees_all() then
        perform pgjobs.no_organization();
    end if;
    if (new.organization is distinct from scope or new.organization is null)
       and not pgjobs.sees_all() then
        raise exception 'pgjobs: organization % is outside this session''s scope',
            coalesce(quote_literal(new.organization), 'NULL (system)')
            using errcode = 'insufficient_privilege';
    end if;
    if new.name is null or new.name = '' or length(new.name) > 200 then
        perform pgjobs.invalid_job('a schedule name is 1-200 characters');
    end if;
    if new.organization = '' then
        perform pgjobs.invalid_job('organization must not be empty (NULL is a system schedule)');
    end if;
    select * into t from pgjobs.job_types where name = new.job_type;
    if not found then
        perform pgjobs.invalid_job(format('unknown job type %L', new.job_type));
    end if;
    -- The jobs' own payload limits (pgjobs.payload_problem): every fire
    -- enqueues this payload, so one they refuse is refused here, once.
    new.payload := coalesce(new.payload, '{}');
    problem := pgjobs.payload_problem(new.payload);
    if problem is not null then
        perform pgjobs.invalid_job(problem);
    end if;
    new.timezone := coalesce(new.timezone, 'UTC');
    if tg_op = 'INSERT' or new.cron is distinct from old.cron
       or new.timezone is distinct from old.timezone then
        perform pgjobs.check_timezone(new.timezone);
        -- A new rule starts after now, and never at or before a tick already fired.
        new.next_fire_at := pgjobs.cron_next(new.cron, new.timezone,
                                             greatest(now(), new.last_fired_at));
        if new.next_fire_at is null then
            perform pgjobs.invalid_job(format('cron expression %L never fires', new.cron));
        end if;
    end if;
    if tg_op = 'UPDATE' then
        new.created_at := old.created_at;
    end if;
    new.updated_at := now();
    return new;
end
$$;

create trigger schedules_before_write
    before insert or update on pgjobs.schedules
    for each row execute function pgjobs.schedules_before_write();

-- ---------------------------------------------------------------------------
-- Public functions. A schedule is named within the session's
-- organization (or, unscoped, among system schedules unless `organization` is
-- given); another organization's schedule is invisible, so "no schedule".
-- ---------------------------------------------------------------------------

-- Creates or updates a schedule; returns its next fire time. An update that
-- keeps the cron and time zone keeps the next fire time too.
create function pgjobs.schedule(
    name         text,
    job_type     text,
    cron         text,
    payload      jsonb   default '{}',
    organization text    default null,
    timezone     text    default 'UTC',
    catch_up     int     default null)
returns timestamptz language plpgsql as $$
#variable_conflict use_column
declare
    org  text := coalesce(schedule.organization, pgjobs.current_organization());
    next_at timestamptz;
begin
    insert into pgjobs.schedules as s
           (name, organization, job_type, cron, timezone, payload, catch_up, next_fire_at)
    values (schedule.name, org, schedule.job_type, schedule.cron,
            coalesce(schedule.timezone, 'UTC'), coalesce(schedule.payload, '{}'),
            coalesce(schedule.catch_up, 1), 'infinity')
    on conflict (organization, name) do update
       set job_type = excluded.job_type, cron = excluded.cron, timezone = excluded.timezone,
           payload = excluded.payload,
           catch_up = coalesce(schedule.catch_up, s.catch_up)
    returning s.next_fire_at into next_at;
    return next_at;
end
$$;

create function pgjobs.schedule_not_found(name text) returns void
language plpgsql as $$
begin
    raise exception 'pgjobs: no schedule %', quote_literal(name) using errcode = 'PJ002';
end
$$;

-- Removes a schedule (and its fire records); jobs it made stay.
create function pgjobs.unschedule(name text, organization text default null) returns boolean
language plpgsql as $$
declare
    org text := coalesce(unschedule.organization, pgjobs.current_organization());
begin
    delete from pgjobs.schedules s
     where s.organization is not distinct from org and s.name = unschedule.name;
    if not found then
        perform pgjobs.schedule_not_found(unschedule.name);
    end if;
    delete from pgjobs.schedule_fires f
     where f.organization = coalesce(org, '') and f.schedule = unschedule.name;
    return true;
end
$$;

-- Stops firing; the ticks it misses count as downtime when it resumes.
create function pgjobs.pause_schedule(name text, organization text default null)
returns text language plpgsql as $$
declare
    org text := coalesce(pause_schedule.organization, pgjobs.current_organization());
begin
    update pgjobs.schedules s set enabled = false
     where s.organization is not distinct from org and s.name = pause_schedule.name;
    if not found then
        perform pgjobs.schedule_not_found(pause_schedule.name);
    end if;
    return 'paused';
end
$$;

-- Fires again: like after downtime, the latest missed tick (or up to
-- catch_up of them) fires at once, then the schedule goes on. Returns the
-- next fire time.
create function pgjobs.resume_schedule(name text, organization text default null)
returns timestamptz language plpgsql as $$
declare
    org  text := coalesce(resume_schedule.organization, pgjobs.current_organization());
    next_at timestamptz;
begin
    update pgjobs.schedules s set enabled = true
     where s.organization is not distinct from org and s.name = resume_schedule.name
    returning s.next_fire_at into next_at;
    if not found then
        perform pgjobs.schedule_not_found(resume_schedule.name);
    end if;
    return next_at;
end
$$;

-- One job now, through the ordinary enqueue, without moving the schedule.
-- Returns the job's id (a live duplicate's, if the job type dedups).
-- As the owner: it writes the job's first history row, which no runtime role may.
create function pgjobs.trigger_schedule(name text, organization text default null)
returns bigint language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    org text := coalesce(trigger_schedule.organization, pgjobs.current_organization());
    s   pgjobs.schedules;
    r   record;
begin
    select * into s from pgjobs.schedules x
     where x.organization is not distinct from org and x.name = trigger_schedule.name;
    if not found then
        perform pgjobs.schedule_not_found(trigger_schedule.name);
    end if;
    r := pgjobs.enqueue_job(s.job_type, s.payload, s.organization);
    insert into pgjobs.schedule_fires (organization, schedule, fire_at, manual, job_id, duplicate)
    values (coalesce(s.organization, ''), s.name, now(), true, r.id, r.duplicate);
    if not r.duplicate then
        insert into pgjobs.job_events (job_id, organization, job_type, attempt, from_state,
                                       to_state, message)
        values (r.id, s.organization, s.job_type, 0, null, 'queued',
                format('triggered from schedule %s', quote_literal(s.name)));
    end if;
    update pgjobs.schedules x set last_job_id = r.id
     where x.organization is not distinct from s.organization and x.name = s.name;
    return r.id;
end
$$;

-- ---------------------------------------------------------------------------
-- Firing (the workers; pgjobs/schedules/fire.py)
-- ---------------------------------------------------------------------------

-- Fires what a worker planned for the due schedules it locked: per schedule
-- the ticks to fire (the latest missed, or up to catch_up of them) and the
-- next fire time, which the worker computed with cronsim. Each schedule moves
-- only if it still holds the next fire time the worker read; each tick
-- becomes a job only if its fire row is new. A schedule whose fire fails (its
-- job type was disabled, say) records the error and moves on, so it neither
-- blocks the others nor fires in a loop.
create function pgjobs.schedule_fire(fires jsonb, now timestamptz default null)
returns table (organization text, name text, fire_at timestamptz, job_id bigint,
               duplicate boolean, error text)
language plpgsql
security definer  -- as the owner: it writes history rows (as trigger_schedule)
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    t    timestamptz := coalesce(schedule_fire.now, now());
    e    record;
    s    pgjobs.schedules;
    tick timestamptz;
    r    record;
    made bigint;
begin
    for e in
        select x.organization as org, x.name as sched, x.expected, x.next_fire_at as next, x.ticks
          from jsonb_to_recordset(fires) as x(organization text, name text, expected timestamptz,
                                              next_fire_at timestamptz, ticks timestamptz[])
    loop
        begin
            update pgjobs.schedules x
               set next_fire_at = e.next,
                   last_fired_at = greatest(x.last_fired_at,
                                            (select max(k) from unnest(e.ticks) k)),
                   last_error = null
             where x.organization is not distinct from e.org and x.name = e.sched
               and x.next_fire_at = e.expected and x.enabled
            returning * into s;
            continue when not found;  -- fired or changed by someone else meanwhile
            made := null;
            foreach tick in array e.ticks loop
                insert into pgjobs.schedule_fires (organization, schedule, fire_at)
                values (coalesce(s.organization, ''), s.name, tick)
                on conflict (organization, schedule, fire_at) where not manual do nothing;
                continue when not found;  -- this tick has its job already
                r := pgjobs.enqueue_job(s.job_type, s.payload, s.organization);
                update pgjobs.schedule_fires f set job_id = r.id, duplicate = r.duplicate
                 where f.organization = coalesce(s.organization, '') and f.schedule = s.name
                   and f.fire_at = tick and not f.manual;
                if not r.duplicate then
                    insert into pgjobs.job_events (job_id, organization, job_type, attempt,
                                                   from_state, to_state, message)
                    values (r.id, s.organization, s.job_type, 0, null, 'queued',
                            format('fired by schedule %s for %s', quote_literal(s.name),
                                   to_char(tick at time zone 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
                end if;
                made := r.id;
                organization := s.organization; name := s.name; fire_at := tick;
                job_id := r.id; duplicate := r.duplicate; error := null;
                return next;
            end loop;
            if made is not null then
                update pgjobs.schedules x set last_job_id = made
                 where x.organization is not distinct from s.organization and x.name = s.name;
            end if;
            -- Fire records are the guard for ticks near now; older ones only weigh.
            delete from pgjobs.schedule_fires f
             where f.organization = coalesce(s.organization, '') and f.schedule = s.name
               and f.fired_at < t - interval '7 days';
        exception when others then
            update pgjobs.schedules x set next_fire_at = e.next, last_error = sqlerrm
             where x.organization is not distinct from e.org and x.name = e.sched
               and x.next_fire_at = e.expected;
            organization := e.org; name := e.sched; fire_at := null; job_id := null;
            duplicate := null; error := sqlerrm;
            return next;
        end;
    end loop;
end
$$;
