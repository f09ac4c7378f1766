-- Input that would mean something else, or could not be read back (issue 11, item 8).
--
-- * Time zones: Postgres accepts more than IANA names. `Mars/Olympus5` and `Foo/Bar3Baz` are
--   read as POSIX rules (a fixed -05:00 offset, no DST), `europe/london` is matched without
--   regard to case, and `posix/...`/`right/...` are copies of the database. Python's zoneinfo
--   on Linux loads none of the first three. Now only an exact, canonically spelled name from
--   the zone database is accepted, for relatives and schedules alike.
-- * schedules.local_time: Postgres' `time` allows 24:00, which rang at 00:00 the next day and
--   which psycopg cannot read back (DataError). Refused.
-- * schedules.days_of_week: a two-dimensional (or oddly bounded) array reached an internal
--   "multidimensional arrays" error; it now gets the field-named message.

-- The zone names accepted: those of pg_timezone_names, minus the copies of the database
-- (posix/, right/) and files that are not zones (localtime, posixrules, Factory). A table,
-- because pg_timezone_names reads the zone folder on every call (about 60 ms, too slow for a
-- CHECK run on every insert). Refresh it with private.refresh_time_zones() after the server's
-- time-zone data is updated.
create table private.time_zones (
  name text primary key
);
revoke all on private.time_zones from public, anon, authenticated;
grant select on private.time_zones to authenticated, service_role;

create or replace function private.refresh_time_zones()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
begin
  insert into private.time_zones (name)
  select z.name from pg_catalog.pg_timezone_names z
   where z.name !~ '^(posix|right)/'
     and z.name not in ('localtime', 'posixrules', 'Factory')
  on conflict do nothing;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
revoke all on function private.refresh_time_zones() from public, anon, authenticated;
select private.refresh_time_zones();

-- CHECK helper: an exact IANA zone name (Area/Location, or UTC), spelled as the zone database
-- spells it. Abbreviations (EST), POSIX strings (UTC+5, Mars/Olympus5) and other spellings
-- (europe/london) are refused; a miscased name is told its canonical spelling in the hint.
create or replace function private.is_timezone(p_field text, p_zone text)
returns boolean
language plpgsql stable
set search_path = ''
as $$
declare
  v_canonical text;
begin
  if p_zone is null then
    return null;
  end if;
  if p_zone ~ '^(UTC|[A-Za-z]+(/[A-Za-z0-9_+\-]+)+)$'
     and exists (select 1 from private.time_zones z where z.name = p_zone) then
    return true;
  end if;
  select z.name into v_canonical from private.time_zones z
   where lower(z.name) = lower(p_zone) and z.name ~ '^(UTC|[A-Za-z]+(/[A-Za-z0-9_+\-]+)+)$'
   order by z.name limit 1;
  raise exception 'invalid %: unknown time zone "%"', p_field, left(p_zone, 100)
    using errcode = 'check_violation',
          hint = case when v_canonical is not null
                      then format('Time zone names are case-sensitive: use %s.', v_canonical)
                      else 'Use an IANA time zone name such as Europe/London or America/New_York.'
                 end;
end
$$;

-- CHECK helper: ISO days of week, 1 = Monday … 7 = Sunday, at least one, no repeats, as a
-- plain list (one dimension, starting at index 1).
create or replace function private.is_iso_days(p_field text, p_days smallint[])
returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_days is null then
    return null;
  end if;
  -- The shape first: `<@` and array_position raise on a multidimensional array.
  if array_ndims(p_days) = 1 and array_lower(p_days, 1) = 1
     and cardinality(p_days) between 1 and 7
     and array_position(p_days, null) is null
     and p_days <@ array[1, 2, 3, 4, 5, 6, 7]::smallint[]
     and (select count(distinct d) from unnest(p_days) d) = cardinality(p_days) then
    return true;
  end if;
  raise exception 'invalid %: "%" must list ISO days of week 1 (Monday) to 7 (Sunday), at least one and each once',
    p_field, left(p_days::text, 200)
    using errcode = 'check_violation';
end
$$;

-- CHECK helper: a time of day, 00:00 up to but not including 24:00.
create or replace function private.is_time_of_day(p_field text, p_time time)
returns boolean
language sql immutable
as $$
  select case
    when p_time is null or p_time < time '24:00' then true
    else private.reject_value(p_field, p_time::text, 'must be a time of day before 24:00 (use 00:00 of the next day)')
  end
$$;

revoke all on function private.is_timezone(text, text), private.is_iso_days(text, smallint[]),
  private.is_time_of_day(text, time) from public, anon;
grant execute on function private.is_timezone(text, text), private.is_iso_days(text, smallint[]),
  private.is_time_of_day(text, time) to authenticated, service_role;

-- Stored values the new rules refuse. Each rewrite keeps the meaning exactly, so nothing that
-- rang before rings differently; what cannot be rewritten is left as it was and reported.
do $$
declare
  v_left integer;
begin
  -- A miscased zone name denotes one zone: store its canonical spelling.
  update public.relatives r set timezone = z.name
    from private.time_zones z
   where lower(z.name) = lower(r.timezone) and z.name <> r.timezone
     and not exists (select 1 from private.time_zones e where e.name = r.timezone)
     and (select count(*) from private.time_zones y where lower(y.name) = lower(r.timezone)) = 1;
  update public.schedules s set timezone = z.name
    from private.time_zones z
   where lower(z.name) = lower(s.timezone) and z.name <> s.timezone
     and not exists (select 1 from private.time_zones e where e.name = s.timezone)
     and (select count(*) from private.time_zones y where lower(y.name) = lower(s.timezone)) = 1;
  select (select count(*) from public.relatives r
          where not exists (select 1 from private.time_zones z where z.name = r.timezone))
       + (select count(*) from public.schedules s
          where not exists (select 1 from private.time_zones z where z.name = s.timezone))
    into v_left;
  if v_left > 0 then
    raise warning '% relatives/schedules keep a time zone that is not an IANA name (they are refused on their next edit)', v_left
      using hint = 'select id, timezone from relatives union all select id, timezone from schedules '
                   'where timezone not in (select name from private.time_zones)';
  end if;

  -- 24:00 on day D rang at 00:00 on day D+1: say so directly.
  update public.schedules s
     set local_time = time '00:00',
         days_of_week = (select array_agg(distinct (d % 7) + 1 order by (d % 7) + 1)
                         from unnest(s.days_of_week) d)
   where s.local_time = time '24:00'
     and exists (select 1 from private.time_zones z where z.name = s.timezone);
end
$$;

-- Checked for every new or changed row at once; existing rows are validated when none is left
-- at 24:00 (a schedule whose zone is not an IANA name cannot be rewritten above).
alter table public.schedules
  add constraint schedules_local_time_check
  check (private.is_time_of_day('schedules.local_time', local_time)) not valid;
do $$
begin
  if not exists (select 1 from public.schedules s where s.local_time = time '24:00') then
    alter table public.schedules validate constraint schedules_local_time_check;
  else
    raise warning 'schedules at 24:00 in a zone that is not an IANA name are left as they are'
      using hint = 'select id from schedules where local_time = ''24:00''';
  end if;
end
$$;
