-- The device's upcoming calls, for the app's reminder screen (issue 16):
--   device_upcoming_calls(device, from, to)
-- For the API (service_role) only. It filters the dashboard's upcoming_calls, whose
-- occurrence logic (the scheduler's own functions) stays in one place; nothing is copied.

-- The upcoming calls of the device's relative in [p_from, p_to]: exactly the dashboard's
-- upcoming_calls rows (same occurrences, same states, same window rules and errors) for the
-- relative this device is paired to. A device that is not active is refused (CP401), so a
-- revoked device learns nothing.
create or replace function public.device_upcoming_calls(
  p_device_id uuid, p_from timestamptz, p_to timestamptz)
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
language plpgsql stable security definer
set search_path = ''
as $$
declare
  v_relative uuid;
  v_household uuid;
begin
  select d.relative_id, d.household_id into v_relative, v_household
    from public.device_pairs d where d.id = p_device_id and d.status = 'active';
  if v_relative is null then
    raise exception 'device is not paired or has been revoked' using errcode = 'CP401';
  end if;
  return query
    select u.* from public.upcoming_calls(v_household, p_from, p_to) u
     where u.relative_id = v_relative;
end
$$;

revoke all on function public.device_upcoming_calls(uuid, timestamptz, timestamptz)
  from public, anon, authenticated;
grant execute on function public.device_upcoming_calls(uuid, timestamptz, timestamptz)
  to service_role;
