-- Call events reported by the relative's app (issue 6): the session state machine.
--
--   event      from                    to            repeated (no change)      otherwise
--   delivered  queued                  ringing       ringing, accepted,        409
--                                                    in_progress, completed
--   accepted   queued, ringing         accepted      accepted                  410 if expired,
--                                                                              cancelled, missed
--                                                                              or failed; 409
--   declined   queued, ringing         declined      declined                  409
--   timeout    queued, ringing         missed        missed                    409
--   connected  accepted                in_progress   in_progress, completed    409
--                                                    (same conversation)
--   ended      in_progress             completed     completed, failed after   409
--              accepted                failed        an answer
--
-- "delivered" after the call moved on is a late report of something already implied. A
-- "timeout" is the device's own ring timer: the session is missed at once and retried (or the
-- family alerted) exactly as phase 2 would have done when the ring timeout passed. The
-- post-call webhook completes the session whatever the app reported.

-- The state a session moves to on an event; the current state when the event is a repeat.
-- Raises CP409 (illegal) or CP410 (the call is over: the app must end it), naming the state.
create or replace function private.call_transition(p_status text, p_event text)
returns text
language plpgsql immutable
set search_path = ''
as $$
declare
  v_next text;
begin
  v_next := case p_event
    when 'delivered' then case when p_status = 'queued' then 'ringing'
                               when p_status in ('ringing', 'accepted', 'in_progress', 'completed')
                                 then p_status end
    when 'accepted' then case when p_status in ('queued', 'ringing') then 'accepted'
                              when p_status = 'accepted' then p_status end
    when 'declined' then case when p_status in ('queued', 'ringing') then 'declined'
                              when p_status = 'declined' then p_status end
    when 'timeout' then case when p_status in ('queued', 'ringing') then 'missed'
                             when p_status = 'missed' then p_status end
    when 'connected' then case when p_status = 'accepted' then 'in_progress'
                               when p_status in ('in_progress', 'completed') then p_status end
    when 'ended' then case when p_status = 'in_progress' then 'completed'
                           when p_status = 'accepted' then 'failed'
                           when p_status in ('completed', 'failed') then p_status end
  end;
  if v_next is not null then
    return v_next;
  end if;
  if p_event not in ('delivered', 'accepted', 'declined', 'timeout', 'connected', 'ended') then
    raise exception 'invalid event: "%" is not one of delivered, accepted, declined, timeout, connected, ended',
      left(p_event, 50) using errcode = 'CP422';
  end if;
  if p_event = 'accepted' and p_status in ('expired', 'cancelled', 'missed', 'failed') then
    raise exception 'call session is %: the call is over', p_status
      using errcode = 'CP410', hint = 'End the call on the device.';
  end if;
  raise exception 'event % is not allowed: call session is %', p_event, p_status
    using errcode = 'CP409';
end
$$;

-- The session a device acts on: it must be the session's own device, and still active.
-- Another device's session and a session that does not exist get the same 404.
create or replace function private.device_session(p_device_id uuid, p_session_id uuid)
returns public.call_sessions
language plpgsql
set search_path = ''
as $$
declare
  v_session public.call_sessions;
begin
  perform private.active_device(p_device_id);
  select c.* into v_session from public.call_sessions c
   where c.id = p_session_id and c.device_id = p_device_id
   for update of c;
  if v_session.id is null then
    raise exception 'call session % not found', p_session_id using errcode = 'P0002';
  end if;
  return v_session;
end
$$;

-- What the app passes to ElevenLabs when the conversation starts (all strings).
create or replace function private.conversation_variables(p_session public.call_sessions)
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'relative_name', r.display_name,
    'household_name', h.name,
    'call_session_id', p_session.id::text,
    'last_call_summary', coalesce((
      select l.summary from public.call_logs l
       where l.relative_id = p_session.relative_id and l.call_session_id <> p_session.id
         and l.summary is not null
       order by l.created_at desc limit 1), ''))
  from public.relatives r join public.households h on h.id = r.household_id
  where r.id = p_session.relative_id
$$;

-- API, before minting a conversation token: may this device accept this call now? Raises as
-- record_call_event would (404, 409, 410) and writes nothing; returns the dynamic variables.
-- The token is minted between this and record_call_event(…, 'accepted', …), outside any
-- transaction; if minting fails, the session is left as it was.
create or replace function public.prepare_call_accept(p_device_id uuid, p_session_id uuid)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_session public.call_sessions;
begin
  v_session := private.device_session(p_device_id, p_session_id);
  perform private.call_transition(v_session.status, 'accepted');
  return private.conversation_variables(v_session);
end
$$;

-- API `POST /v1/calls/{id}/events`. `p_at` is the device's clock: it dates the change, kept
-- between the session's creation and now. Returns {"session_id", "event", "status",
-- "changed", "dynamic_variables" (accepted only)}.
create or replace function public.record_call_event(
  p_device_id uuid, p_session_id uuid, p_event text, p_at timestamptz,
  p_conversation_id text default null)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_session public.call_sessions;
  v_next text;
  v_at timestamptz;
  v_changed boolean;
  v_name text;
  v_zone text;
begin
  v_session := private.device_session(p_device_id, p_session_id);
  v_next := private.call_transition(v_session.status, p_event);
  v_at := least(greatest(coalesce(p_at, now()), v_session.created_at), now());

  if p_event = 'connected' then
    if p_conversation_id is null or btrim(p_conversation_id) = '' then
      raise exception 'invalid conversation_id: required with the connected event'
        using errcode = 'CP422';
    end if;
    if v_session.conversation_id is not null and v_session.conversation_id <> p_conversation_id then
      raise exception 'event connected is not allowed: call session is % with another conversation',
        v_session.status using errcode = 'CP409';
    end if;
    if v_next = 'completed' and v_session.conversation_id is null then
      raise exception 'event connected is not allowed: call session is completed'
        using errcode = 'CP409';
    end if;
    if exists (select 1 from public.call_sessions c
               where c.conversation_id = p_conversation_id and c.id <> p_session_id) then
      raise exception 'invalid conversation_id: already belongs to another call'
        using errcode = 'CP409';
    end if;
  end if;
  if p_event = 'ended' and v_next = 'failed' and v_session.status = 'failed'
     and v_session.answered_at is null then
    raise exception 'event ended is not allowed: call session is failed' using errcode = 'CP409';
  end if;

  v_changed := v_next <> v_session.status;
  if v_changed then
    update public.call_sessions c
       set status = v_next,
           ringing_at = case when v_next = 'ringing' then coalesce(c.ringing_at, v_at)
                             else c.ringing_at end,
           answered_at = case when v_next = 'accepted' then coalesce(c.answered_at, v_at)
                              else c.answered_at end,
           conversation_id = case when v_next = 'in_progress' then p_conversation_id
                                  else c.conversation_id end,
           ended_at = case when v_next in ('declined', 'missed', 'completed', 'failed')
                             then coalesce(c.ended_at, v_at) else c.ended_at end,
           failure_reason = case v_next
                              when 'declined' then 'declined on the device'
                              when 'missed' then 'not answered: the ring timed out on the device'
                              when 'failed' then 'the call ended before the conversation connected'
                              else c.failure_reason end
     where c.id = p_session_id
    returning c.* into v_session;

    if v_next = 'missed' then
      if v_session.attempt < v_session.max_attempts then
        perform private.queue_retries(array[v_session.id], now());
      else
        -- The same alert (and dedupe key) phase 2 raises after the last missed attempt.
        select r.display_name, r.timezone into v_name, v_zone
          from public.relatives r where r.id = v_session.relative_id;
        insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                                   severity, message, details, dedupe_key)
        values (v_session.household_id, v_session.relative_id, v_session.id, v_session.device_id,
                'missed_calls', 'critical',
                format('%s did not answer %s call%s at %s', v_name, v_session.attempt,
                       case when v_session.attempt > 1 then 's' else '' end,
                       to_char(v_session.occurrence_at at time zone v_zone, 'Dy DD Mon HH24:MI')),
                jsonb_build_object('schedule_id', v_session.schedule_id,
                                   'occurrence_at', v_session.occurrence_at,
                                   'attempts', v_session.attempt),
                'missed_calls:' || coalesce(v_session.schedule_id::text, v_session.id::text)
                  || ':' || v_session.occurrence_at)
        on conflict (dedupe_key) do nothing;
      end if;
    end if;
  end if;

  return jsonb_build_object(
    'session_id', v_session.id, 'event', p_event, 'status', v_session.status,
    'changed', v_changed)
    || case when p_event = 'accepted'
            then jsonb_build_object('dynamic_variables', private.conversation_variables(v_session))
            else '{}'::jsonb end;
end
$$;

revoke all on function public.prepare_call_accept(uuid, uuid),
  public.record_call_event(uuid, uuid, text, timestamptz, text),
  private.device_session(uuid, uuid), private.call_transition(text, text),
  private.conversation_variables(public.call_sessions)
  from public, anon, authenticated;
grant execute on function public.prepare_call_accept(uuid, uuid),
  public.record_call_event(uuid, uuid, text, timestamptz, text) to service_role;
