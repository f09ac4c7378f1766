-- Phase 2 takes back a dead worker's rows at once, as every claim already does: the crash-
-- recovery migration (20261126210000) added private.reclaim_orphaned_leases and the call
-- lifecycle migration (20261126100100) rewrote release_due_calls; this joins the two. The body
-- is 20261126100100's, with step 0 added.

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
  -- 0. Rows of a worker whose session is gone (its presence lock vanished): back at once,
  --    without waiting for their lease (20261126210000_crash_recovery.sql).
  perform private.reclaim_orphaned_leases();
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

