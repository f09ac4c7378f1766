-- The life of a call: call_sessions (what the relative sees; id = CallKit UUID),
-- notification_queue (the push work), call_logs (what the family reads), webhook_events
-- (every inbound webhook as received) and alerts (escalations to the family).

create table public.call_sessions (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null,
  relative_id uuid not null,
  -- History outlives the schedule and the device it used.
  schedule_id uuid references public.schedules (id) on delete set null,
  device_id uuid references public.device_pairs (id) on delete set null,
  occurrence_at timestamptz not null,
  attempt smallint not null default 1
    constraint call_sessions_attempt_check
    check (private.between_('call_sessions.attempt', attempt, 1, 5)),
  origin text not null default 'schedule'
    constraint call_sessions_origin_check
    check (private.one_of('call_sessions.origin', origin, '{schedule,call_now,retry}')),
  -- queued -> ringing -> accepted -> in_progress -> completed, or a terminal failure.
  status text not null default 'queued'
    constraint call_sessions_status_check
    check (private.one_of('call_sessions.status', status,
      '{queued,ringing,accepted,in_progress,completed,declined,missed,failed,cancelled,expired}')),
  failure_reason text,
  -- Attempt policy snapshot, so retries follow the policy the call was queued with.
  ring_timeout interval not null default interval '45 seconds',
  max_attempts smallint not null default 1
    constraint call_sessions_max_attempts_check
    check (private.between_('call_sessions.max_attempts', max_attempts, 1, 5)),
  retry_interval interval not null default interval '10 minutes',
  conversation_id text,
  ringing_at timestamptz,
  answered_at timestamptz,
  ended_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (relative_id, household_id)
    references public.relatives (id, household_id) on delete cascade,
  -- One session per (schedule, occurrence, attempt): the scheduler's idempotency key.
  constraint call_sessions_occurrence_key unique (schedule_id, occurrence_at, attempt),
  -- Phase 2 times rings out from ringing_at: a ringing session without it would ring forever.
  constraint call_sessions_ringing_check check (status <> 'ringing' or ringing_at is not null)
);
-- The webhook finds its session by ElevenLabs conversation id; unique once set. Partial, so
-- the many sessions that never connect cost no index entry.
create unique index call_sessions_conversation_idx on public.call_sessions (conversation_id)
  where conversation_id is not null;
create index call_sessions_household_idx on public.call_sessions (household_id, occurrence_at desc);
-- Every foreign key has an index led by a selective column of its own, so cascades and
-- SET NULLs on delete look rows up instead of scanning (tests/test_constraints.py checks it).
create index call_sessions_relative_idx on public.call_sessions (relative_id);
create index call_sessions_device_idx on public.call_sessions (device_id);
create index call_sessions_ringing_idx on public.call_sessions (ringing_at) where status = 'ringing';

create table public.notification_queue (
  id uuid primary key default gen_random_uuid(),
  -- One queue row per session; it goes with its session (and so with the household).
  call_session_id uuid not null unique references public.call_sessions (id) on delete cascade,
  household_id uuid not null,
  -- Snapshot values, like the token: the session holds the real references to the schedule
  -- and the device. No foreign keys here keep the hot insert path lean (each costs a lookup
  -- per queued call); rows are short-lived (retention) and removed with their session.
  schedule_id uuid,
  device_id uuid,
  occurrence_at timestamptz not null,
  attempt smallint not null default 1
    constraint notification_queue_attempt_check
    check (private.between_('notification_queue.attempt', attempt, 1, 5)),
  status text not null default 'queued'
    constraint notification_queue_status_check
    check (private.one_of('notification_queue.status', status,
      '{queued,due,claimed,sent,failed,expired,cancelled}')),
  send_at timestamptz not null,
  deadline_at timestamptz not null,
  locked_by text,
  locked_until timestamptz,
  provider_attempts integer not null default 0
    constraint notification_queue_provider_attempts_check
    check (private.between_('notification_queue.provider_attempts', provider_attempts, 0, 1000)),
  next_attempt_at timestamptz,
  -- Snapshot taken when queued: which device, which provider and token, and the fallback.
  platform text not null
    constraint notification_queue_platform_check
    check (private.one_of('notification_queue.platform', platform, '{ios,android}')),
  provider text not null
    constraint notification_queue_provider_check
    check (private.one_of('notification_queue.provider', provider, '{apns,fcm}')),
  push_token text not null,
  fallback_provider text
    constraint notification_queue_fallback_provider_check
    check (private.one_of('notification_queue.fallback_provider', fallback_provider, '{apns,fcm}')),
  fallback_token text,
  payload jsonb not null default '{}'::jsonb,
  provider_message_id text,
  last_error text,
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint notification_queue_occurrence_key unique (schedule_id, occurrence_at, attempt),
  constraint notification_queue_deadline_check check (deadline_at >= send_at),
  constraint notification_queue_lease_check check (
    (status = 'claimed') = (locked_by is not null and locked_until is not null)),
  constraint notification_queue_fallback_check check (
    (fallback_provider is null) = (fallback_token is null))
);
-- The worker's hot paths: rows to send by time, and leases to recover by expiry.
create index notification_queue_due_idx on public.notification_queue (send_at)
  where status in ('queued', 'due');
create index notification_queue_lease_idx on public.notification_queue (locked_until)
  where status = 'claimed';

create table public.call_logs (
  id uuid primary key default gen_random_uuid(),
  -- household_id is copied from the session by the ingesting SQL function.
  call_session_id uuid not null unique references public.call_sessions (id) on delete cascade,
  household_id uuid not null,
  relative_id uuid not null,
  conversation_id text,
  outcome text not null
    constraint call_logs_outcome_check
    check (private.one_of('call_logs.outcome', outcome,
      '{completed,declined,missed,failed,cancelled,expired}')),
  started_at timestamptz,
  duration_secs integer
    constraint call_logs_duration_secs_check
    check (private.between_('call_logs.duration_secs', duration_secs, 0, 86400)),
  transcript jsonb not null default '[]'::jsonb,
  summary text,
  title text,
  call_successful text
    constraint call_logs_call_successful_check
    check (private.one_of('call_logs.call_successful', call_successful, '{success,failure,unknown}')),
  mood text,
  data_collection jsonb not null default '{}'::jsonb,
  evaluation jsonb not null default '{}'::jsonb,
  concerns text[] not null default '{}',
  cost numeric,
  termination_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (relative_id, household_id)
    references public.relatives (id, household_id) on delete cascade
);
create index call_logs_household_idx on public.call_logs (household_id, created_at desc);
create index call_logs_conversation_idx on public.call_logs (conversation_id);
create index call_logs_relative_idx on public.call_logs (relative_id);

create table public.webhook_events (
  id uuid primary key default gen_random_uuid(),
  provider text not null default 'elevenlabs'
    constraint webhook_events_provider_check
    check (private.one_of('webhook_events.provider', provider, '{elevenlabs}')),
  event_type text not null,
  event_timestamp timestamptz,
  conversation_id text,
  -- provider + type + conversation + timestamp: a redelivery finds its first copy.
  dedupe_key text not null unique,
  payload jsonb,
  payload_bytes integer not null default 0,
  status text not null default 'received'
    constraint webhook_events_status_check
    check (private.one_of('webhook_events.status', status,
      '{received,processed,unmatched,ignored,failed}')),
  call_session_id uuid references public.call_sessions (id) on delete set null,
  -- Deleting a household deletes its transcripts, including the raw webhooks.
  household_id uuid references public.households (id) on delete cascade,
  error text,
  received_at timestamptz not null default now(),
  processed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index webhook_events_conversation_idx on public.webhook_events (conversation_id);
create index webhook_events_session_idx on public.webhook_events (call_session_id);
create index webhook_events_household_idx on public.webhook_events (household_id);

create table public.alerts (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null references public.households (id) on delete cascade,
  relative_id uuid,
  call_session_id uuid references public.call_sessions (id) on delete set null,
  device_id uuid references public.device_pairs (id) on delete set null,
  kind text not null
    constraint alerts_kind_check
    check (private.one_of('alerts.kind', kind,
      '{missed_calls,no_device,device_unreachable,invalid_token,provider_config,call_failed,call_expired,concerning_content}')),
  severity text not null default 'warning'
    constraint alerts_severity_check
    check (private.one_of('alerts.severity', severity, '{info,warning,critical}')),
  message text not null,
  details jsonb not null default '{}'::jsonb,
  -- Optional: the same incident raises one alert, not one per retry.
  dedupe_key text unique,
  acknowledged_at timestamptz,
  acknowledged_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  foreign key (relative_id, household_id)
    references public.relatives (id, household_id) on delete cascade
);
create index alerts_household_idx on public.alerts (household_id, created_at desc);
create index alerts_relative_idx on public.alerts (relative_id);
create index alerts_session_idx on public.alerts (call_session_id);
create index alerts_device_idx on public.alerts (device_id);

create trigger call_sessions_touch before update on public.call_sessions
  for each row execute function private.touch_updated_at();
create trigger notification_queue_touch before update on public.notification_queue
  for each row execute function private.touch_updated_at();
create trigger call_logs_touch before update on public.call_logs
  for each row execute function private.touch_updated_at();
create trigger webhook_events_touch before update on public.webhook_events
  for each row execute function private.touch_updated_at();
create trigger alerts_touch before update on public.alerts
  for each row execute function private.touch_updated_at();

-- RLS -------------------------------------------------------------------------------------
alter table public.call_sessions enable row level security;
alter table public.notification_queue enable row level security;
alter table public.call_logs enable row level security;
alter table public.webhook_events enable row level security;
alter table public.alerts enable row level security;

-- Members read their household's sessions, logs and alerts. Only SQL functions (run by the
-- worker and API as service_role) write them: no write policy exists for `authenticated`.
create policy call_sessions_select on public.call_sessions for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy call_logs_select on public.call_logs for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy alerts_select on public.alerts for select to authenticated
  using (household_id in (select private.member_household_ids()));
-- notification_queue (push tokens) and webhook_events (raw payloads): no policy at all, so
-- nobody but service_role (which bypasses RLS) sees or touches them.

revoke all on public.call_sessions, public.notification_queue, public.call_logs,
              public.webhook_events, public.alerts from anon, authenticated;
grant select on public.call_sessions, public.call_logs, public.alerts to authenticated;

-- RPC: a family member acknowledges an alert of their household.
create or replace function public.acknowledge_alert(p_alert_id uuid)
returns public.alerts
language plpgsql security definer
set search_path = ''
as $$
declare
  v_alert public.alerts;
begin
  update public.alerts a
     set acknowledged_at = coalesce(a.acknowledged_at, now()),
         acknowledged_by = coalesce(a.acknowledged_by, (select auth.uid()))
   where a.id = p_alert_id and a.household_id in (select private.member_household_ids())
  returning * into v_alert;
  if v_alert.id is null then
    raise exception 'alert % not found', p_alert_id using errcode = 'P0002';
  end if;
  return v_alert;
end
$$;
revoke all on function public.acknowledge_alert(uuid) from public, anon;
grant execute on function public.acknowledge_alert(uuid) to authenticated;

-- Realtime: the dashboard updates live from these (device_pairs without secrets or tokens).
alter publication supabase_realtime add table public.schedules, public.call_sessions,
  public.call_logs, public.alerts;
alter publication supabase_realtime add table public.device_pairs
  (id, household_id, relative_id, status, platform, label, app_version,
   fcm_token_invalidated_at, fcm_token_invalid_reason,
   voip_token_invalidated_at, voip_token_invalid_reason,
   apns_token_invalidated_at, apns_token_invalid_reason,
   pairing_code_expires_at, paired_at, last_seen_at,
   notification_permission, full_screen_intent_permission,
   revoked_at, revoked_reason, created_by, created_at, updated_at);
