-- The two-phase scheduler. The database decides, idempotently, what rings when.
--
-- Phase 1 queue_upcoming_calls(): every occurrence starting within the lead time becomes a
--   call session plus a notification_queue row (device and token snapshot), once.
-- Phase 2 release_due_calls(): rows whose time has come become due and workers are woken;
--   expired leases return; rows past their deadline expire; unanswered rings become missed
--   and are retried until the attempts run out, then the family is alerted.
--
-- Time policy (README "Time policy"): occurrences are local wall times in the schedule's IANA
-- zone. In a spring-forward gap the call rings once at the shifted wall time (the local time
-- read with the offset in force before the change: 01:30 in a 01:00->02:00 gap rings at 02:30).
-- In a fall-back overlap it rings once, at the first instant. Occurrences missed (downtime)
-- beyond the grace window are recorded as expired, never sent late; the schedule goes on.
--
-- Planner settings: the phase functions run with jit = off (JIT compiling these short
-- statements cost ~0.8 s per call, far more than running them) and enable_seqscan = off
-- (every table they touch has an index path for exactly the rows needed; fresh or bulk-loaded
-- tables look empty to the planner, which then picks per-row sequential scans: quadratic).

-- Settings ---------------------------------------------------------------------------------
create table private.scheduler_settings (
  singleton boolean primary key default true constraint scheduler_settings_singleton check (singleton),
  -- Phase 1 queues this far ahead (>= the pg_cron period, so nothing is ever queued late).
  lead_time interval not null default interval '5 minutes'
    constraint scheduler_settings_lead_time_check
    check (private.between_('scheduler_settings.lead_time', lead_time,
                                    interval '1 minute', interval '7 days')),
  -- A push not sent within this long after its time is not sent at all.
  grace interval not null default interval '2 minutes'
    constraint scheduler_settings_grace_check
    check (private.between_('scheduler_settings.grace', grace,
                                    interval '10 seconds', interval '30 minutes')),
  -- Finished queue rows are deleted after this long (call_sessions/call_logs are kept).
  retention interval not null default interval '30 days'
    constraint scheduler_settings_retention_check
    check (private.between_('scheduler_settings.retention', retention,
                                    interval '1 hour', interval '3650 days')),
  -- pg_cron's own run history is trimmed after this long.
  cron_history interval not null default interval '7 days'
);
insert into private.scheduler_settings default values;
revoke all on private.scheduler_settings from public, anon, authenticated;

-- Workers LISTEN here. Payload: {"event": "queued"|"due", "count": n, "earliest": timestamptz}.
create or replace function private.notify_channel() returns text
language sql immutable
as $$ select 'callpanion_queue' $$;

-- Time -------------------------------------------------------------------------------------

-- The instant a local wall time denotes in a zone, under the time policy above.
-- Postgres alone reads a gap time with the pre-transition offset (what we want) but picks the
-- later instant in an overlap; `e` is the reading with the offset in force 3 hours earlier,
-- which is the first instant in an overlap and the shifted time in a gap.
create or replace function private.local_to_instant(p_local timestamp, p_zone text)
returns timestamptz
language plpgsql immutable strict parallel safe
set search_path = ''
as $$
declare
  a timestamptz := p_local at time zone p_zone;
  before_a timestamptz := a - interval '3 hours';
  e timestamptz := (p_local - ((before_a at time zone p_zone) - (before_a at time zone 'UTC')))
                   at time zone 'UTC';
begin
  if e <> a and (a at time zone p_zone) = p_local and (e at time zone p_zone) <> p_local then
    return a;  -- an offset change in the 3 hours before a, but p_local itself is unambiguous
  end if;
  return e;
end
$$;

-- Every occurrence of a schedule in [p_from, p_to] (both inclusive), in time order.
create or replace function private.occurrences_between(
  p_kind text, p_local_time time, p_days smallint[], p_zone text, p_run_at timestamptz,
  p_from timestamptz, p_to timestamptz)
returns table (occurrence_at timestamptz)
language sql stable parallel safe
rows 2
as $$
  select p_run_at
  where p_kind = 'one_off' and p_run_at between p_from and p_to
  union all
  select o.at
  from generate_series(0, (p_to at time zone p_zone)::date - (p_from at time zone p_zone)::date + 1) k,
       lateral (select (p_from at time zone p_zone)::date - 1 + k as day) d,
       lateral (select private.local_to_instant(d.day + p_local_time, p_zone) as at) o
  where p_kind = 'recurring'
    and extract(isodow from d.day)::smallint = any (p_days)
    and o.at between p_from and p_to
  order by 1
$$;

-- The first occurrence strictly after p_after (null when there is none: a past one-off).
create or replace function private.next_occurrence(
  p_kind text, p_local_time time, p_days smallint[], p_zone text, p_run_at timestamptz,
  p_after timestamptz)
returns timestamptz
language plpgsql stable parallel safe
set search_path = ''
as $$
declare
  v_day date := (p_after at time zone p_zone)::date;
  v_at timestamptz;
begin
  if p_kind = 'one_off' then
    return case when p_run_at > p_after then p_run_at end;
  end if;
  -- A week and a day covers every weekday even when today's time has passed.
  for k in 0..8 loop
    if extract(isodow from v_day + k)::smallint = any (p_days) then
      v_at := private.local_to_instant((v_day + k) + p_local_time, p_zone);
      if v_at > p_after then
        return v_at;
      end if;
    end if;
  end loop;
  return null;
end
$$;

-- When a schedule next rings, counting from p_now: none while inactive; after a pause (an
-- occurrence at the very instant the pause ends rings).
create or replace function private.schedule_next_run(s public.schedules, p_now timestamptz)
returns timestamptz
language sql stable
as $$
  select case when s.active then
    private.next_occurrence(s.kind, s.local_time, s.days_of_week, s.timezone, s.run_at,
                            greatest(p_now, s.paused_until - interval '1 microsecond'))
  end
$$;

-- Whether a queued occurrence still belongs to the schedule as it is now.
create or replace function private.schedule_still_wants(s public.schedules, p_occurrence timestamptz)
returns boolean
language sql stable
as $$
  select s.active
     and (s.paused_until is null or s.paused_until <= p_occurrence)
     and exists (select 1 from private.occurrences_between(
                   s.kind, s.local_time, s.days_of_week, s.timezone, s.run_at,
                   p_occurrence, p_occurrence))
$$;

-- Keep next_run_at right on every insert and on every change of when or whether it rings.
create or replace function private.schedules_plan()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT'
     or (new.kind, new.local_time, new.days_of_week, new.timezone, new.run_at, new.active,
         new.paused_until)
        is distinct from
        (old.kind, old.local_time, old.days_of_week, old.timezone, old.run_at, old.active,
         old.paused_until) then
    -- Validate before computing with it (CHECK constraints only run after this trigger).
    perform private.is_timezone('schedules.timezone', new.timezone);
    if new.kind = 'one_off' and new.run_at <= now()
       and (tg_op = 'INSERT' or new.run_at is distinct from old.run_at) then
      raise exception 'invalid schedules.run_at: "%" is in the past; a one-off call must be in the future',
        new.run_at
        using errcode = 'check_violation',
              hint = 'Use request_call_now() to ring straight away.';
    end if;
    new.next_run_at := private.schedule_next_run(new, now());
  end if;
  return new;
end
$$;

-- Runs after schedules_defaults (trigger names sort alphabetically), so timezone is set.
create trigger schedules_plan before insert or update on public.schedules
  for each row execute function private.schedules_plan();

-- A paused, deactivated, deleted or re-timed schedule withdraws the calls it had queued and
-- no longer wants; calls that still fit stay queued (and are not queued twice). Rows a worker
-- has already claimed are being sent and are left alone.
create or replace function private.schedules_withdraw()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Inside the cascade of a relative's (or household's) deletion everything goes anyway.
  if tg_op = 'DELETE' and not exists (select 1 from public.relatives r where r.id = old.relative_id) then
    return old;
  end if;
  with withdrawn as (
    update public.notification_queue q
       set status = 'cancelled',
           last_error = case when tg_op = 'DELETE' then 'the schedule was deleted'
                             else 'the schedule was changed, paused or deactivated' end
     where q.schedule_id = old.id
       and q.status in ('queued', 'due')
       and (tg_op = 'DELETE' or not private.schedule_still_wants(new, q.occurrence_at))
    returning q.call_session_id
  )
  update public.call_sessions c
     set status = 'cancelled', ended_at = now(),
         failure_reason = case when tg_op = 'DELETE' then 'the schedule was deleted'
                               else 'the schedule was changed, paused or deactivated' end
    from withdrawn w
   where c.id = w.call_session_id and c.status = 'queued';
  return old;  -- as a BEFORE DELETE trigger, returning null would cancel the delete
end
$$;

create trigger schedules_withdraw_on_change after update on public.schedules
  for each row
  when ((new.kind, new.local_time, new.days_of_week, new.timezone, new.run_at, new.active,
         new.paused_until)
        is distinct from
        (old.kind, old.local_time, old.days_of_week, old.timezone, old.run_at, old.active,
         old.paused_until))
  execute function private.schedules_withdraw();
create trigger schedules_withdraw_on_delete before delete on public.schedules
  for each row execute function private.schedules_withdraw();

-- Operations: recompute next_run_at from a given moment (tests, restores, backfills).
create or replace function public.reschedule(p_schedule_id uuid, p_now timestamptz default now())
returns timestamptz
language sql
set search_path = ''
as $$
  update public.schedules s set next_run_at = private.schedule_next_run(s, p_now)
  where s.id = p_schedule_id
  returning s.next_run_at
$$;

-- Targets -----------------------------------------------------------------------------------

-- Where a call to a relative goes right now: the active device, the token to ring it with,
-- and the fallback. iOS rings through a PushKit VoIP push (APNs); its FCM token, if valid, is
-- the fallback. Android rings through a high-priority FCM data message; there is no fallback.
create or replace view private.call_targets as
select d.relative_id,
       d.id as device_id,
       d.platform,
       p.provider,
       p.push_token,
       case when p.provider = 'apns' and fcm_ok then 'fcm' end as fallback_provider,
       case when p.provider = 'apns' and fcm_ok then d.fcm_token end as fallback_token
from public.device_pairs d
cross join lateral (
  select d.voip_token is not null and d.voip_token_invalidated_at is null as voip_ok,
         d.fcm_token is not null and d.fcm_token_invalidated_at is null as fcm_ok
) v
cross join lateral (
  select case when d.platform = 'ios' and voip_ok then 'apns'
              when fcm_ok then 'fcm' end as provider,
         case when d.platform = 'ios' and voip_ok then d.voip_token
              when fcm_ok then d.fcm_token end as push_token
) p
where d.status = 'active';

-- Why a relative cannot be rung (null when they can).
create or replace function private.unreachable_reason(p_device_id uuid, p_provider text)
returns text
language sql immutable
as $$
  select case when p_device_id is null then 'no active paired device'
              when p_provider is null then 'the paired device has no valid push token' end
$$;

-- A small, complete snapshot for the push payload (names as they were when queued).
create or replace function private.call_payload(
  p_relative_name text, p_household_name text, p_title text, p_ring_timeout interval)
returns jsonb
language sql immutable
as $$
  select jsonb_build_object(
    'relative_name', p_relative_name,
    'household_name', p_household_name,
    'title', p_title,
    'ring_timeout_ms', (extract(epoch from p_ring_timeout) * 1000)::bigint)
$$;

-- Wake workers when rows are queued: one NOTIFY per statement, not per row.
create or replace function private.notify_queued()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_count bigint;
  v_earliest timestamptz;
begin
  select count(*), min(send_at) into v_count, v_earliest
    from inserted where status in ('queued', 'due');
  if v_count > 0 then
    perform pg_notify(private.notify_channel(),
      json_build_object('event', 'queued', 'count', v_count, 'earliest', v_earliest)::text);
  end if;
  return null;
end
$$;

create trigger notification_queue_notify after insert on public.notification_queue
  referencing new table as inserted
  for each statement execute function private.notify_queued();

-- Phase 1 ------------------------------------------------------------------------------------

-- Queue every occurrence that starts within the lead time. One set-based statement: it locks
-- the due schedules (skipping any another run holds), creates the sessions (unique on
-- schedule, occurrence, attempt), the queue rows for those that can ring, a failed session and
-- an alert for those that cannot, an expired session for those already past their grace
-- window, and advances next_run_at. Returns the number of sessions created.
create or replace function public.queue_upcoming_calls(p_now timestamptz default now())
returns integer
language plpgsql
set jit = off            -- see "Planner settings" above
set enable_seqscan = off
set search_path = ''
as $$
declare
  v_count integer;
begin
  with cfg as (
    select lead_time, grace from private.scheduler_settings
  ),
  due as (
    select s.*
    from public.schedules s
    where s.active and s.next_run_at <= p_now + (select lead_time from cfg)
    -- NO KEY UPDATE: excludes another phase-1 run, but not the key-share locks that foreign
    -- key checks (a retry session referencing its schedule) take.
    for no key update of s skip locked
  ),
  occ as materialized (
    select gen_random_uuid() as session_id,
           d.id as schedule_id, d.household_id, d.relative_id, d.max_attempts, d.retry_interval,
           d.ring_timeout, d.timezone, o.occurrence_at,
           t.device_id, t.platform, t.provider, t.push_token, t.fallback_provider, t.fallback_token,
           r.display_name as relative_name,
           private.call_payload(r.display_name, h.name, d.title, d.ring_timeout) as payload,
           case when o.occurrence_at + cfg.grace < p_now then 'expired'
                when t.provider is null then 'failed'
                else 'queued' end as outcome,
           case when o.occurrence_at + cfg.grace < p_now
                  then 'the scheduler was not running at the scheduled time'
                else private.unreachable_reason(t.device_id, t.provider) end as reason,
           o.occurrence_at + cfg.grace as deadline_at
    from due d
    cross join cfg
    cross join lateral private.occurrences_between(
      d.kind, d.local_time, d.days_of_week, d.timezone, d.run_at,
      d.next_run_at, p_now + cfg.lead_time) o
    join public.relatives r on r.id = d.relative_id
    join public.households h on h.id = d.household_id
    left join private.call_targets t on t.relative_id = d.relative_id
    -- An occurrence queued before (next_run_at rewound by reschedule() or by re-activating a
    -- schedule) is not queued again. The schedule row locks above keep concurrent runs apart,
    -- so every insert below can be driven straight from occ: no CTE-to-CTE join, whose
    -- row estimates could turn it into a quadratic nested loop.
    where not exists (
      select 1 from public.call_sessions c
      where c.schedule_id = d.id and c.occurrence_at = o.occurrence_at and c.attempt = 1)
  ),
  new_sessions as (
    insert into public.call_sessions (
      id, household_id, relative_id, schedule_id, device_id, occurrence_at, attempt, origin,
      status, failure_reason, ring_timeout, max_attempts, retry_interval, ended_at)
    select session_id, household_id, relative_id, schedule_id, device_id, occurrence_at, 1,
           'schedule', outcome, reason, ring_timeout, max_attempts, retry_interval,
           case when outcome <> 'queued' then p_now end
    from occ
    on conflict on constraint call_sessions_occurrence_key do nothing
    returning id
  ),
  new_queue as (
    insert into public.notification_queue (
      call_session_id, household_id, schedule_id, device_id, occurrence_at, attempt, status,
      send_at, deadline_at, platform, provider, push_token, fallback_provider, fallback_token,
      payload)
    select o.session_id, o.household_id, o.schedule_id, o.device_id, o.occurrence_at, 1, 'queued',
           o.occurrence_at, o.deadline_at, o.platform, o.provider, o.push_token,
           o.fallback_provider, o.fallback_token, o.payload
    from occ o
    where o.outcome = 'queued'
  ),
  new_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, details, dedupe_key)
    select o.household_id, o.relative_id, o.session_id, o.device_id,
           case when o.outcome = 'expired' then 'call_expired'
                when o.device_id is null then 'no_device'
                else 'invalid_token' end,
           case when o.outcome = 'expired' then 'warning' else 'critical' end,
           format('%s''s call at %s did not ring: %s', o.relative_name,
                  to_char(o.occurrence_at at time zone o.timezone, 'Dy DD Mon HH24:MI'), o.reason),
           jsonb_build_object('schedule_id', o.schedule_id, 'occurrence_at', o.occurrence_at),
           o.outcome || ':' || o.session_id
    from occ o
    where o.outcome <> 'queued'
    on conflict (dedupe_key) do nothing
  ),
  advanced as (
    update public.schedules s
       set next_run_at = private.schedule_next_run(s, p_now + (select lead_time from cfg))
      from due d
     where s.id = d.id
  )
  select count(*) into v_count from new_sessions;
  return v_count;
end
$$;

-- Phase 2 ------------------------------------------------------------------------------------

-- Start the next attempt of sessions that went unanswered: a new session (a new CallKit id,
-- since it is a new call) queued retry_interval after the ring timed out, with a fresh device
-- and token snapshot. Returns the number of attempts queued.
create or replace function private.queue_retries(p_missed uuid[], p_now timestamptz)
returns integer
language plpgsql
set jit = off            -- see "Planner settings" above
set enable_seqscan = off
set search_path = ''
as $$
declare
  v_count integer;
begin
  with cfg as (
    select grace from private.scheduler_settings
  ),
  nxt as materialized (
    select gen_random_uuid() as session_id, m.household_id, m.relative_id, m.schedule_id,
           m.occurrence_at, m.attempt + 1 as attempt, m.max_attempts, m.retry_interval,
           m.ring_timeout,
           greatest(p_now, m.ringing_at + m.ring_timeout + m.retry_interval) as send_at,
           t.device_id, t.platform, t.provider, t.push_token, t.fallback_provider, t.fallback_token,
           private.unreachable_reason(t.device_id, t.provider) as reason,
           r.display_name as relative_name, r.timezone,
           private.call_payload(r.display_name, h.name, s.title, m.ring_timeout) as payload
    from public.call_sessions m
    join public.relatives r on r.id = m.relative_id
    join public.households h on h.id = m.household_id
    left join public.schedules s on s.id = m.schedule_id
    left join private.call_targets t on t.relative_id = m.relative_id
    where m.id = any (p_missed) and m.attempt < m.max_attempts
      -- No retry once the schedule was deleted, deactivated or paused past the retry.
      and s.id is not null and s.active
      and (s.paused_until is null
           or s.paused_until <= greatest(p_now, m.ringing_at + m.ring_timeout + m.retry_interval))
      -- Each insert below reads nxt directly (no CTE-to-CTE join); an attempt that already
      -- exists is never made twice.
      and not exists (
        select 1 from public.call_sessions c
        where c.schedule_id = m.schedule_id and c.occurrence_at = m.occurrence_at
          and c.attempt = m.attempt + 1)
  ),
  new_sessions as (
    insert into public.call_sessions (
      id, household_id, relative_id, schedule_id, device_id, occurrence_at, attempt, origin,
      status, failure_reason, ring_timeout, max_attempts, retry_interval, ended_at)
    select session_id, household_id, relative_id, schedule_id, device_id, occurrence_at, attempt,
           'retry', case when reason is null then 'queued' else 'failed' end, reason,
           ring_timeout, max_attempts, retry_interval, case when reason is not null then p_now end
    from nxt
    on conflict on constraint call_sessions_occurrence_key do nothing
    returning id
  ),
  new_queue as (
    insert into public.notification_queue (
      call_session_id, household_id, schedule_id, device_id, occurrence_at, attempt, status,
      send_at, deadline_at, platform, provider, push_token, fallback_provider, fallback_token,
      payload)
    select x.session_id, x.household_id, x.schedule_id, x.device_id, x.occurrence_at, x.attempt,
           'queued', x.send_at, x.send_at + (select grace from cfg), x.platform, x.provider,
           x.push_token, x.fallback_provider, x.fallback_token, x.payload
    from nxt x
    where x.reason is null
  ),
  new_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, dedupe_key)
    select x.household_id, x.relative_id, x.session_id, x.device_id,
           case when x.device_id is null then 'no_device' else 'invalid_token' end, 'critical',
           format('%s could not be called again (attempt %s): %s', x.relative_name, x.attempt,
                  x.reason),
           'failed:' || x.session_id
    from nxt x
    where x.reason is not null
    on conflict (dedupe_key) do nothing
  )
  select count(*) into v_count from new_sessions;
  return v_count;
end
$$;

-- Rows whose time has come become due (workers are woken); expired leases return to the
-- queue; rows past their deadline expire with their session (and the family is told); rings
-- past their timeout become missed and are retried, or, after the last attempt, raise a
-- missed_calls alert. Declined calls are final. Returns the number of rows made due.
create or replace function public.release_due_calls(p_now timestamptz default now())
returns integer
language plpgsql
set jit = off            -- see "Planner settings" above
set enable_seqscan = off
set search_path = ''
as $$
declare
  v_due integer;
  v_earliest timestamptz;
  v_missed uuid[];
begin
  -- 1. Leases that ran out: the worker died or hung. Back to the queue, to be claimed again.
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null,
         last_error = coalesce(q.last_error || '; ', '') || 'lease of ' || q.locked_by || ' expired'
   where q.status = 'claimed' and q.locked_until < p_now;

  -- 2. Past the deadline and not being sent right now: never send late.
  with expired as (
    update public.notification_queue q
       set status = 'expired', last_error = coalesce(q.last_error, 'deadline passed before sending')
     where q.status in ('queued', 'due') and q.deadline_at < p_now
       and q.send_at < p_now  -- implied (deadline_at >= send_at); lets the send_at index serve
    returning q.call_session_id
  ),
  sessions as (
    update public.call_sessions c
       set status = 'expired', ended_at = p_now,
           failure_reason = coalesce(c.failure_reason, 'the push could not be sent before its deadline')
      from expired e
     where c.id = e.call_session_id and c.status = 'queued'
    returning c.id, c.household_id, c.relative_id, c.device_id, c.occurrence_at
  )
  insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind, message, dedupe_key)
  select s.household_id, s.relative_id, s.id, s.device_id, 'call_expired',
         format('%s''s call at %s could not be sent in time', r.display_name,
                to_char(s.occurrence_at at time zone r.timezone, 'Dy DD Mon HH24:MI')),
         'call_expired:' || s.id
  from sessions s join public.relatives r on r.id = s.relative_id
  on conflict (dedupe_key) do nothing;

  -- 3. Unanswered rings become missed; queue the next attempts; alert after the last one.
  with missed as (
    update public.call_sessions c
       set status = 'missed', ended_at = c.ringing_at + c.ring_timeout,
           failure_reason = 'not answered within the ring timeout'
     where c.status = 'ringing' and c.ringing_at + c.ring_timeout < p_now
    returning c.*
  ),
  final as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, details, dedupe_key)
    select m.household_id, m.relative_id, m.id, m.device_id, 'missed_calls', 'critical',
           format('%s did not answer %s call%s at %s', r.display_name, m.attempt,
                  case when m.attempt > 1 then 's' else '' end,
                  to_char(m.occurrence_at at time zone r.timezone, 'Dy DD Mon HH24:MI')),
           jsonb_build_object('schedule_id', m.schedule_id, 'occurrence_at', m.occurrence_at,
                              'attempts', m.attempt),
           'missed_calls:' || coalesce(m.schedule_id::text, m.id::text) || ':' || m.occurrence_at
    from missed m join public.relatives r on r.id = m.relative_id
    where m.attempt >= m.max_attempts
    on conflict (dedupe_key) do nothing
  )
  select array_agg(m.id) filter (where m.attempt < m.max_attempts) into v_missed from missed m;
  if v_missed is not null then
    perform private.queue_retries(v_missed, p_now);
  end if;

  -- 4. Release what is due, and wake the workers once.
  with released as (
    update public.notification_queue q
       set status = 'due'
     where q.status = 'queued' and q.send_at <= p_now
    returning q.send_at
  )
  select count(*), min(send_at) into v_due, v_earliest from released;
  if v_due > 0 or exists (select 1 from public.notification_queue
                          where status = 'due' and send_at <= p_now) then
    perform pg_notify(private.notify_channel(),
      json_build_object('event', 'due', 'count', v_due, 'earliest', v_earliest)::text);
  end if;
  return v_due;
end
$$;

-- "Call now" ---------------------------------------------------------------------------------

-- A family member rings their relative straight away. One attempt (the family is there and
-- can press again); refused while another call to the relative is under way.
create or replace function public.request_call_now(p_relative_id uuid)
returns uuid
language plpgsql security definer
set search_path = ''
as $$
declare
  v_relative public.relatives;
  v_household_name text;
  v_target record;
  v_session uuid := gen_random_uuid();
  v_now timestamptz := now();
  v_grace interval := (select grace from private.scheduler_settings);
begin
  select r.* into v_relative from public.relatives r
   where r.id = p_relative_id
     and (auth.role() = 'service_role' or r.household_id in (select private.member_household_ids()));
  if v_relative.id is null then
    raise exception 'relative % not found', p_relative_id using errcode = 'P0002';
  end if;
  -- Serialise concurrent requests for the same relative.
  perform pg_advisory_xact_lock(hashtextextended('call_now:' || p_relative_id::text, 0));
  -- Under way: ringing, or in a conversation that started within the last two hours (a lost
  -- "ended" event must not block calls for ever), or a push about to go out.
  if exists (select 1 from public.call_sessions c
             where c.relative_id = p_relative_id
               and ((c.status = 'ringing')
                    or (c.status in ('accepted', 'in_progress')
                        and coalesce(c.answered_at, c.ringing_at, c.created_at) > v_now - interval '2 hours')))
     or exists (select 1 from public.notification_queue q
                join public.call_sessions c on c.id = q.call_session_id
                where c.relative_id = p_relative_id and c.status = 'queued'
                  and q.status in ('queued', 'due', 'claimed') and q.send_at <= v_now + v_grace) then
    raise exception 'a call to % is already under way', v_relative.display_name
      using errcode = 'P0001', hint = 'Wait for it to end.';
  end if;
  select * into v_target from private.call_targets t where t.relative_id = p_relative_id;
  if v_target.provider is null then
    raise exception '% cannot be called: %', v_relative.display_name,
      private.unreachable_reason(v_target.device_id, v_target.provider)
      using errcode = 'P0001', hint = 'Pair the app on their phone first.';
  end if;
  select h.name into v_household_name from public.households h where h.id = v_relative.household_id;
  insert into public.call_sessions (id, household_id, relative_id, device_id, occurrence_at,
                                    attempt, origin, status, max_attempts)
  values (v_session, v_relative.household_id, p_relative_id, v_target.device_id, v_now, 1,
          'call_now', 'queued', 1);
  insert into public.notification_queue (
    call_session_id, household_id, device_id, occurrence_at, attempt, status, send_at,
    deadline_at, platform, provider, push_token, fallback_provider, fallback_token, payload)
  values (v_session, v_relative.household_id, v_target.device_id, v_now, 1, 'due', v_now,
          v_now + v_grace, v_target.platform, v_target.provider, v_target.push_token,
          v_target.fallback_provider, v_target.fallback_token,
          private.call_payload(v_relative.display_name, v_household_name, 'Call now',
                               interval '45 seconds'));
  return v_session;
end
$$;

-- Maintenance ---------------------------------------------------------------------------------

-- Daily: delete finished queue rows past the retention period and old pg_cron run history.
-- Sessions and logs are history the family reads, and are kept.
create or replace function public.cleanup_finished(p_now timestamptz default now())
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_cfg private.scheduler_settings;
begin
  select * into v_cfg from private.scheduler_settings;
  delete from public.notification_queue q
   where q.status in ('sent', 'failed', 'expired', 'cancelled')
     and q.updated_at < p_now - v_cfg.retention;
  get diagnostics v_count = row_count;
  -- pg_cron's history, where it exists and the caller may trim it (looked up by oid: naming
  -- it would need usage on the cron schema, which service_role does not have).
  if exists (select 1 from pg_catalog.pg_class c
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'cron' and c.relname = 'job_run_details'
               and pg_catalog.has_schema_privilege(n.oid, 'USAGE')
               and pg_catalog.has_table_privilege(c.oid, 'DELETE')) then
    execute 'delete from cron.job_run_details where end_time < $1' using p_now - v_cfg.cron_history;
  end if;
  return v_count;
end
$$;

-- Privileges: the phases and maintenance are for the service role (and pg_cron as postgres).
revoke all on function public.queue_upcoming_calls(timestamptz), public.release_due_calls(timestamptz),
  public.cleanup_finished(timestamptz), public.reschedule(uuid, timestamptz),
  private.queue_retries(uuid[], timestamptz) from public, anon, authenticated;
grant execute on function public.queue_upcoming_calls(timestamptz), public.release_due_calls(timestamptz),
  public.cleanup_finished(timestamptz), public.reschedule(uuid, timestamptz),
  private.queue_retries(uuid[], timestamptz) to service_role;
-- The phases run with the caller's rights: service_role (which bypasses RLS but not grants)
-- reads the settings and the call targets.
grant select on private.scheduler_settings, private.call_targets to service_role;
revoke all on function public.request_call_now(uuid) from public, anon;
grant execute on function public.request_call_now(uuid) to authenticated, service_role;

-- pg_cron -------------------------------------------------------------------------------------
-- pg_cron runs in one database, cron.database_name (`postgres`, as on hosted Supabase and the
-- local stack). Migrating another database (`callpanion migrate` on any Postgres) keeps
-- everything else and says how to drive the phases instead.
-- cron.schedule() with a job name replaces an existing job of that name: re-runs are no-ops.
do $$
begin
  if current_setting('shared_preload_libraries') like '%pg_cron%'
     and current_database() = coalesce(current_setting('cron.database_name', true), 'postgres') then
    create extension if not exists pg_cron;
    perform cron.schedule('callpanion-phase1-queue', '* * * * *', 'select public.queue_upcoming_calls()');
    perform cron.schedule('callpanion-phase2-release', '* * * * *', 'select public.release_due_calls()');
    perform cron.schedule('callpanion-cleanup', '17 3 * * *', 'select public.cleanup_finished()');
  else
    raise warning 'pg_cron does not run in database %: the scheduler phases were not scheduled', current_database()
      using hint = 'Run select public.queue_upcoming_calls() and select public.release_due_calls() '
                   'every minute, and select public.cleanup_finished() daily, from another scheduler.';
  end if;
end
$$;
