-- Read RPCs for the family dashboard, so it computes nothing the database already knows:
--   upcoming_calls(household, from, to)   every occurrence in a window, with its state
--   call_history(household, ...)          finished calls with their outcome, newest first, paged
--   open_alerts(household, limit)         alerts nobody has acknowledged yet
--
-- All three are SECURITY INVOKER: they read the tables through the caller's Row Level Security,
-- so a member sees their own household and nothing else, and service_role (which bypasses RLS)
-- sees any. A household the caller cannot see is refused with the same error whether or not it
-- exists. anon may not call them at all.

-- The household must be visible to the caller (RLS on households decides); raises otherwise.
create or replace function private.require_visible_household(p_field text, p_household_id uuid)
returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if p_household_id is null then
    raise exception 'invalid %: must not be null', p_field using errcode = 'not_null_violation';
  end if;
  if not exists (select 1 from public.households h where h.id = p_household_id) then
    raise exception 'invalid %: "%" is not a household of yours', p_field, p_household_id
      using errcode = 'insufficient_privilege';
  end if;
end
$$;

-- Every occurrence of the household's schedules in [p_from, p_to], in time order. Occurrences
-- come from the scheduler's own functions (private.occurrences_between, and
-- private.schedule_still_wants for active / paused), so they are exactly what phase 1 queues,
-- DST policy included. `status` is the state of the occurrence's latest attempt when it has
-- already been queued (a retry shows its own attempt), else null.
create or replace function public.upcoming_calls(
  p_household_id uuid, p_from timestamptz, p_to timestamptz)
returns table (
  schedule_id uuid,
  schedule_title text,
  relative_id uuid,
  relative_name text,
  timezone text,
  occurrence_at timestamptz,
  local_time timestamp,
  call_session_id uuid,
  attempt smallint,
  status text)
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.require_visible_household('upcoming_calls.p_household_id', p_household_id);
  if p_from is null then
    raise exception 'invalid upcoming_calls.p_from: must not be null' using errcode = 'not_null_violation';
  end if;
  if p_to is null then
    raise exception 'invalid upcoming_calls.p_to: must not be null' using errcode = 'not_null_violation';
  end if;
  if p_to < p_from then
    perform private.reject_value('upcoming_calls.p_to', p_to::text, 'must not be before p_from');
  end if;
  -- Bounded work per call: a dashboard pages through longer spans.
  if p_to - p_from > interval '62 days' then
    perform private.reject_value('upcoming_calls.p_to', p_to::text,
                                 'must be at most 62 days after p_from');
  end if;
  return query
    select s.id, s.title, r.id, r.display_name, s.timezone, o.occurrence_at,
           o.occurrence_at at time zone s.timezone, c.id, c.attempt, c.status
    from public.schedules s
    join public.relatives r on r.id = s.relative_id
    cross join lateral private.occurrences_between(
      s.kind, s.local_time, s.days_of_week, s.timezone, s.run_at, p_from, p_to) o
    left join lateral (
      select cs.id, cs.attempt, cs.status from public.call_sessions cs
      where cs.schedule_id = s.id and cs.occurrence_at = o.occurrence_at
      order by cs.attempt desc limit 1) c on true
    where s.household_id = p_household_id
      and (c.id is not null or private.schedule_still_wants(s, o.occurrence_at))
    order by o.occurrence_at, r.display_name, s.id;
end
$$;

-- Finished calls (completed, declined, missed, failed, cancelled, expired), newest occurrence
-- first, with what the post-call webhook recorded. Keyset paging: pass the last row's
-- (occurrence_at, call_session_id) as (p_before_at, p_before_id) to get the next page.
create or replace function public.call_history(
  p_household_id uuid,
  p_limit integer default 50,
  p_before_at timestamptz default null,
  p_before_id uuid default null,
  p_relative_id uuid default null)
returns table (
  call_session_id uuid,
  relative_id uuid,
  relative_name text,
  schedule_id uuid,
  schedule_title text,
  origin text,
  occurrence_at timestamptz,
  attempt smallint,
  outcome text,
  failure_reason text,
  answered_at timestamptz,
  ended_at timestamptz,
  duration_secs integer,
  title text,
  summary text,
  mood text,
  call_successful text,
  concerns text[])
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.require_visible_household('call_history.p_household_id', p_household_id);
  if p_limit is null or p_limit < 1 or p_limit > 200 then
    perform private.reject_value('call_history.p_limit', coalesce(p_limit::text, 'null'),
                                 'must be between 1 and 200');
  end if;
  if (p_before_at is null) <> (p_before_id is null) then
    perform private.reject_value('call_history.p_before_id', coalesce(p_before_id::text, 'null'),
                                 'must be given together with p_before_at (the last row of the previous page)');
  end if;
  return query
    select cs.id, r.id, r.display_name, cs.schedule_id, s.title, cs.origin, cs.occurrence_at,
           cs.attempt, cs.status, cs.failure_reason, cs.answered_at, cs.ended_at,
           l.duration_secs, l.title, l.summary, l.mood, l.call_successful,
           coalesce(l.concerns, '{}'::text[])
    from public.call_sessions cs
    join public.relatives r on r.id = cs.relative_id
    left join public.schedules s on s.id = cs.schedule_id
    left join public.call_logs l on l.call_session_id = cs.id
    where cs.household_id = p_household_id
      and cs.status in ('completed', 'declined', 'missed', 'failed', 'cancelled', 'expired')
      and (p_relative_id is null or cs.relative_id = p_relative_id)
      and (p_before_at is null or (cs.occurrence_at, cs.id) < (p_before_at, p_before_id))
    order by cs.occurrence_at desc, cs.id desc
    limit p_limit;
end
$$;

-- Alerts of the household that nobody has acknowledged yet, newest first.
create or replace function public.open_alerts(p_household_id uuid, p_limit integer default 100)
returns setof public.alerts
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.require_visible_household('open_alerts.p_household_id', p_household_id);
  if p_limit is null or p_limit < 1 or p_limit > 500 then
    perform private.reject_value('open_alerts.p_limit', coalesce(p_limit::text, 'null'),
                                 'must be between 1 and 500');
  end if;
  return query
    select a.* from public.alerts a
    where a.household_id = p_household_id and a.acknowledged_at is null
    order by a.created_at desc, a.id desc
    limit p_limit;
end
$$;

revoke all on function private.require_visible_household(text, uuid) from public, anon;
grant execute on function private.require_visible_household(text, uuid) to authenticated, service_role;
revoke all on function public.upcoming_calls(uuid, timestamptz, timestamptz),
  public.call_history(uuid, integer, timestamptz, uuid, uuid),
  public.open_alerts(uuid, integer) from public, anon;
grant execute on function public.upcoming_calls(uuid, timestamptz, timestamptz),
  public.call_history(uuid, integer, timestamptz, uuid, uuid),
  public.open_alerts(uuid, integer) to authenticated, service_role;
