-- schedules: when a relative is called. Recurring (local time + ISO days in an IANA zone) or
-- one-off (run_at). next_run_at is maintained by the database (scheduler migration).

create table public.schedules (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null,
  relative_id uuid not null,
  title text
    constraint schedules_title_check check (private.is_text('schedules.title', title, 200)),
  kind text not null default 'recurring'
    constraint schedules_kind_check
    check (private.one_of('schedules.kind', kind, '{recurring,one_off}')),
  local_time time without time zone,
  days_of_week smallint[]
    constraint schedules_days_of_week_check
    check (private.is_iso_days('schedules.days_of_week', days_of_week)),
  -- Defaults to the relative's zone (trigger below).
  timezone text not null
    constraint schedules_timezone_check check (private.is_timezone('schedules.timezone', timezone)),
  run_at timestamptz,
  active boolean not null default true,
  paused_until timestamptz,
  max_attempts smallint not null default 3
    constraint schedules_max_attempts_check
    check (private.between_('schedules.max_attempts', max_attempts, 1, 5)),
  retry_interval interval not null default interval '10 minutes'
    constraint schedules_retry_interval_check
    check (private.between_('schedules.retry_interval', retry_interval,
                                    interval '1 minute', interval '6 hours')),
  -- How long the phone rings before the attempt counts as missed.
  ring_timeout interval not null default interval '45 seconds'
    constraint schedules_ring_timeout_check
    check (private.between_('schedules.ring_timeout', ring_timeout,
                                    interval '15 seconds', interval '120 seconds')),
  next_run_at timestamptz,
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  foreign key (relative_id, household_id)
    references public.relatives (id, household_id) on delete cascade,
  constraint schedules_shape_check check (
    case kind
      when 'recurring' then local_time is not null and days_of_week is not null and run_at is null
      when 'one_off' then run_at is not null and local_time is null and days_of_week is null
    end
    or private.reject_value('schedules.kind', kind,
         'needs local_time and days_of_week (recurring) or run_at alone (one_off)'))
);

-- Phase 1 scans active schedules by next run.
create index schedules_due_idx on public.schedules (next_run_at) where active;
create index schedules_relative_idx on public.schedules (relative_id);
create index schedules_household_idx on public.schedules (household_id);

-- Fill household and timezone from the relative, so the dashboard only names the relative.
create or replace function private.schedules_defaults()
returns trigger
language plpgsql
set search_path = ''
-- A primary-key lookup: never let stale statistics (bulk imports) turn it into a table scan.
set enable_seqscan = off
as $$
declare
  v_household uuid;
  v_zone text;
begin
  -- Runs as the caller, so RLS applies: another household's relative is simply not found.
  select r.household_id, r.timezone into v_household, v_zone
    from public.relatives r where r.id = new.relative_id;
  if not found then
    raise exception 'invalid schedules.relative_id: relative % not found', new.relative_id
      using errcode = 'foreign_key_violation';
  end if;
  if new.household_id is null then
    new.household_id := v_household;
  end if;
  if new.timezone is null then
    new.timezone := v_zone;
  end if;
  -- Recorded from the JWT, never taken from the client.
  new.created_by := coalesce((select auth.uid()), new.created_by);
  return new;
end
$$;

create trigger schedules_defaults before insert on public.schedules
  for each row execute function private.schedules_defaults();
create trigger schedules_touch before update on public.schedules
  for each row execute function private.touch_updated_at();

-- RLS -------------------------------------------------------------------------------------
alter table public.schedules enable row level security;

-- Every member reads, creates and edits their household's schedules; only admins delete.
create policy schedules_select on public.schedules for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy schedules_insert on public.schedules for insert to authenticated
  with check (household_id in (select private.member_household_ids()));
create policy schedules_update on public.schedules for update to authenticated
  using (household_id in (select private.member_household_ids()))
  with check (household_id in (select private.member_household_ids()));
create policy schedules_delete on public.schedules for delete to authenticated
  using (household_id in (select private.admin_household_ids()));

revoke all on public.schedules from anon, authenticated;
grant select, delete on public.schedules to authenticated;
grant insert (household_id, relative_id, title, kind, local_time, days_of_week, timezone, run_at,
              active, paused_until, max_attempts, retry_interval, ring_timeout)
  on public.schedules to authenticated;
grant update (relative_id, title, kind, local_time, days_of_week, timezone, run_at,
              active, paused_until, max_attempts, retry_interval, ring_timeout)
  on public.schedules to authenticated;
