-- Helpers shared by every table: validation with messages that name the field and the reason,
-- the updated_at trigger, and the membership lookups Row Level Security policies use.
-- `private` is not exposed by the Supabase API (only `public` is).

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

-- Raise a check_violation whose message names the column, the bad value and what is allowed.
-- It only runs when a value is invalid.
create or replace function private.reject_value(p_field text, p_value text, p_rule text)
returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_value is null then
    return null;
  end if;
  raise exception 'invalid %: "%" %', p_field, left(p_value, 200), p_rule
    using errcode = 'check_violation';
end
$$;

-- CHECK helper: the value is one of the allowed ones (NULL passes; NOT NULL is separate).
-- A plain SQL CASE the planner inlines into each constraint (hence `stable`, like the
-- format functions it calls), so the happy path costs one comparison.
create or replace function private.one_of(p_field text, p_value text, p_allowed text[])
returns boolean
language sql stable
as $$
  select case
    when p_value is null or p_value = any (p_allowed) then true
    else private.reject_value(p_field, p_value,
                              'is not allowed; allowed values: ' || array_to_string(p_allowed, ', '))
  end
$$;

-- CHECK helper: an IANA time zone name Postgres knows (Area/Location, or UTC).
-- Abbreviations such as EST or POSIX strings such as UTC+5 are refused: they have no DST rules.
create or replace function private.is_timezone(p_field text, p_zone text)
returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_zone is null then
    return null;
  end if;
  if p_zone ~ '^(UTC|[A-Za-z]+(/[A-Za-z0-9_+\-]+)+)$' then
    begin
      perform timestamptz '2000-01-01 00:00:00+00' at time zone p_zone;
      return true;
    exception when invalid_parameter_value then
      null;  -- fall through to the clear message below
    end;
  end if;
  raise exception 'invalid %: unknown time zone "%"', p_field, left(p_zone, 100)
    using errcode = 'check_violation',
          hint = 'Use an IANA time zone name such as Europe/London or America/New_York.';
end
$$;

-- CHECK helper: ISO days of week, 1 = Monday … 7 = Sunday, at least one, no repeats.
create or replace function private.is_iso_days(p_field text, p_days smallint[])
returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_days is null then
    return null;
  end if;
  if cardinality(p_days) between 1 and 7
     and array_position(p_days, null) is null
     and p_days <@ array[1, 2, 3, 4, 5, 6, 7]::smallint[]
     and (select count(distinct d) from unnest(p_days) d) = cardinality(p_days) then
    return true;
  end if;
  raise exception 'invalid %: "%" must list ISO days of week 1 (Monday) to 7 (Sunday), at least one and each once',
    p_field, p_days::text
    using errcode = 'check_violation';
end
$$;

-- CHECK helper: a value matches a pattern; the rule is said in words.
create or replace function private.matches(p_field text, p_value text, p_pattern text, p_rule text)
returns boolean
language sql stable
as $$
  select case
    when p_value is null or p_value ~ p_pattern then true
    else private.reject_value(p_field, p_value, p_rule)
  end
$$;

-- CHECK helper: a number or an interval within bounds.
create or replace function private.between_(
  p_field text, p_value anycompatible, p_min anycompatible, p_max anycompatible)
returns boolean
language sql stable
as $$
  select case
    when p_value is null or p_value between p_min and p_max then true
    else private.reject_value(p_field, p_value::text,
                              format('is out of range: must be between %s and %s', p_min, p_max))
  end
$$;

-- CHECK helper: free text that is not blank and not too long.
create or replace function private.is_text(p_field text, p_value text, p_max_length integer)
returns boolean
language sql stable
as $$
  select case
    when p_value is null or (btrim(p_value) <> '' and length(p_value) <= p_max_length) then true
    else private.reject_value(p_field, p_value,
                              format('must be non-blank text of at most %s characters', p_max_length))
  end
$$;

grant execute on all functions in schema private to authenticated, service_role;

-- Keep updated_at current on every UPDATE.
create or replace function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
