-- Issue 11: one call state machine across scheduler, device events and webhook (scheduler side).
--
-- 1. An occurrence withdrawn by a schedule edit is queued again, once, when an edit makes it
--    fit again (local_time moved away and back, active false then true, days changed back).
--    The withdrawn session is kept as history (cancelled, withdrawn_at set) but no longer
--    holds the (schedule, occurrence, attempt) key; the new one is a new call with a new
--    CallKit id, since the device may have seen the first.
-- 2. Once a conversation for an occurrence is known, nothing rings for it again: no retry is
--    queued and no missed_calls alert is raised for it (see private.occurrence_has_conversation;
--    the webhook side withdraws retries already queued).
-- 3. Every non-final state has a bound after which phase 2 closes it:
--      queued       the queue row's deadline (occurrence + grace)      -> expired
--      ringing      ringing_at + the session's ring timeout             -> missed
--      accepted     answered_at + connect_timeout                       -> failed, no_connected_event
--      in_progress  answered_at + max_conversation + webhook_grace      -> completed, no_end_event
--    request_call_now uses the same bounds instead of "two hours", so it never depends on how
--    often phase 2 runs.
-- Sessions made by the phases are dated by the phase's clock (created_at = p_now), so that a
-- session's own times are consistent when the phases run with an explicit p_now.

-- Settings (README "Scheduler", private.scheduler_settings) ---------------------------------
alter table private.scheduler_settings
  -- An answered call must connect to the conversation within this long.
  add column connect_timeout interval not null default interval '2 minutes'
    constraint scheduler_settings_connect_timeout_check
    check (private.between_('scheduler_settings.connect_timeout', connect_timeout,
                            interval '15 seconds', interval '30 minutes')),
  -- The longest conversation there can be (the agent's maximum duration).
  add column max_conversation interval not null default interval '1 hour'
    constraint scheduler_settings_max_conversation_check
    check (private.between_('scheduler_settings.max_conversation', max_conversation,
                            interval '1 minute', interval '12 hours')),
  -- How long after that the post-call webhook may still be waited for.
  add column webhook_grace interval not null default interval '15 minutes'
    constraint scheduler_settings_webhook_grace_check
    check (private.between_('scheduler_settings.webhook_grace', webhook_grace,
                            interval '1 minute', interval '24 hours'));

-- Item 1: withdrawn sessions no longer hold their occurrence ---------------------------------
alter table public.call_sessions add column withdrawn_at timestamptz;
comment on column public.call_sessions.withdrawn_at is
  'When a schedule edit withdrew this queued call; it then no longer holds its occurrence.';
alter table public.call_sessions drop constraint call_sessions_occurrence_key;
-- One standing session per (schedule, occurrence, attempt): the scheduler's idempotency key.
create unique index call_sessions_occurrence_key on public.call_sessions
  (schedule_id, occurrence_at, attempt) where withdrawn_at is null;
-- All sessions of an occurrence (withdrawn ones too), and the schedule foreign key's index.
create index call_sessions_schedule_idx on public.call_sessions
  (schedule_id, occurrence_at, attempt);
alter table public.notification_queue drop constraint notification_queue_occurrence_key;
create unique index notification_queue_occurrence_key on public.notification_queue
  (schedule_id, occurrence_at, attempt) where status <> 'cancelled';
-- Phase 2 finds answered calls by when they were answered.
create index call_sessions_open_idx on public.call_sessions
  ((coalesce(answered_at, ringing_at, created_at))) where status in ('accepted', 'in_progress');

-- Item 2: is a conversation known for the occurrence of a session? --------------------------
-- The occurrence is (schedule, occurrence_at) for scheduled calls and the session itself for
-- "call now". A conversation is known once the app reported it connected or a post-call
-- report completed a session.
create or replace function private.occurrence_has_conversation(
  p_session_id uuid, p_schedule_id uuid, p_occurrence timestamptz)
returns boolean
language sql stable
set search_path = ''
as $$
  select exists (
    select 1 from public.call_sessions c
    where (c.id = p_session_id
           or (p_schedule_id is not null and c.schedule_id = p_schedule_id
               and c.occurrence_at = p_occurrence))
      and (c.conversation_id is not null or c.status = 'completed'))
$$;

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
     set status = 'cancelled', ended_at = now(), withdrawn_at = now(),
         failure_reason = case when tg_op = 'DELETE' then 'the schedule was deleted'
                               else 'the schedule was changed, paused or deactivated' end
    from withdrawn w
   where c.id = w.call_session_id and c.status = 'queued';
  return old;  -- as a BEFORE DELETE trigger, returning null would cancel the delete
end
$$;

-- Phase 1 (as before, but a withdrawn session no longer holds its occurrence): queue every
-- occurrence that starts within the lead time. One set-based statement: it locks the due
-- schedules (skipping any another run holds), creates the sessions, the queue rows for those
-- that can ring, a failed session and an alert for those that cannot, an expired session for
-- those already past their grace window, and advances next_run_at. Returns the number of
-- sessions created.
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
    -- A session withdrawn by an edit no longer holds its occurrence: an edit that makes the
    -- occurrence fit again queues it again (issue 11, item 1).
    where not exists (
      select 1 from public.call_sessions c
      where c.schedule_id = d.id and c.occurrence_at = o.occurrence_at and c.attempt = 1
        and c.withdrawn_at is null)
  ),
  new_sessions as (
    insert into public.call_sessions (
      id, household_id, relative_id, schedule_id, device_id, occurrence_at, attempt, origin,
      status, failure_reason, ring_timeout, max_attempts, retry_interval, ended_at, created_at)
    select session_id, household_id, relative_id, schedule_id, device_id, occurrence_at, 1,
           'schedule', outcome, reason, ring_timeout, max_attempts, retry_interval,
           case when outcome <> 'queued' then p_now end, p_now
    from occ
    on conflict (schedule_id, occurrence_at, attempt) where withdrawn_at is null do nothing
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
      -- Nothing rings for an occurrence once a conversation for it is known (item 2).
      and not private.occurrence_has_conversation(m.id, m.schedule_id, m.occurrence_at)
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
      status, failure_reason, ring_timeout, max_attempts, retry_interval, ended_at, created_at)
    select session_id, household_id, relative_id, schedule_id, device_id, occurrence_at, attempt,
           'retry', case when reason is null then 'queued' else 'failed' end, reason,
           ring_timeout, max_attempts, retry_interval, case when reason is not null then p_now end,
           p_now
    from nxt
    on conflict (schedule_id, occurrence_at, attempt) where withdrawn_at is null do nothing
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
  v_cfg private.scheduler_settings;
begin
  select * into v_cfg from private.scheduler_settings;
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
      and not private.occurrence_has_conversation(m.id, m.schedule_id, m.occurrence_at)
    on conflict (dedupe_key) do nothing
  )
  select array_agg(m.id) filter (where m.attempt < m.max_attempts) into v_missed from missed m;
  if v_missed is not null then
    perform private.queue_retries(v_missed, p_now);
  end if;

  -- 3b. Answered calls past their bounds (item 3). Dated at the bound, not at p_now: the
  -- call cannot have gone on longer, however late phase 2 runs. A post-call webhook that
  -- arrives later still fills in the log and the real end.
  update public.call_sessions c
     set status = 'failed', ended_at = coalesce(c.answered_at, c.ringing_at, c.created_at) + v_cfg.connect_timeout,
         failure_reason = 'no_connected_event'
   where c.status = 'accepted'
     and coalesce(c.answered_at, c.ringing_at, c.created_at) < p_now - v_cfg.connect_timeout;
  update public.call_sessions c
     set status = 'completed', ended_at = coalesce(c.answered_at, c.ringing_at, c.created_at) + v_cfg.max_conversation,
         failure_reason = 'no_end_event'
   where c.status = 'in_progress'
     and coalesce(c.answered_at, c.ringing_at, c.created_at)
         < p_now - v_cfg.max_conversation - v_cfg.webhook_grace;

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
  v_cfg private.scheduler_settings := (select s from private.scheduler_settings s);
  v_grace interval := v_cfg.grace;
begin
  select r.* into v_relative from public.relatives r
   where r.id = p_relative_id
     and (auth.role() = 'service_role' or r.household_id in (select private.member_household_ids()));
  if v_relative.id is null then
    raise exception 'relative % not found', p_relative_id using errcode = 'P0002';
  end if;
  -- Serialise concurrent requests for the same relative.
  perform pg_advisory_xact_lock(hashtextextended('call_now:' || p_relative_id::text, 0));
  -- Under way: ringing, answered or in a conversation within the bounds phase 2 closes them
  -- at (a lost "ended" event must not block calls for ever, whether or not phase 2 has run
  -- yet), or a push about to go out.
  if exists (select 1 from public.call_sessions c
             where c.relative_id = p_relative_id
               and ((c.status = 'ringing' and c.ringing_at + c.ring_timeout >= v_now)
                    or (c.status = 'accepted'
                        and coalesce(c.answered_at, c.ringing_at, c.created_at)
                            >= v_now - v_cfg.connect_timeout)
                    or (c.status = 'in_progress'
                        and coalesce(c.answered_at, c.ringing_at, c.created_at)
                            >= v_now - v_cfg.max_conversation - v_cfg.webhook_grace)))
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

revoke all on function private.occurrence_has_conversation(uuid, uuid, timestamptz)
  from public, anon, authenticated;
grant execute on function private.occurrence_has_conversation(uuid, uuid, timestamptz)
  to service_role;
