-- Issue 11: one call state machine across scheduler, device events and webhook (device-event
-- and webhook side). README "A call's life" holds the state table and the webhook's rule.
--
-- 2. Once a conversation for an occurrence is known (the app reported "connected", or a
--    post-call report completed a session), the occurrence's other attempts that are queued or
--    ringing are withdrawn (cancelled, with the reason), their queue rows cancelled, and a
--    missed_calls alert already raised for the occurrence is closed as resolved.
-- 4. The newest post_call_transcription of a session wins: an older one is stored for audit
--    (status superseded) and changes nothing.
-- 5. What a conversation report means depends on the session's state:
--      queued, ringing, accepted, in_progress, missed      -> completed (a conversation can
--        have happened: the push reached the phone, or the timeout raced the answer)
--      failed after an answer (answered_at set)            -> completed
--      completed                                           -> completed (the log is updated)
--      declined, expired, cancelled, failed before an answer -> kept (none can have happened)
--    and an occurrence has at most one completed session: a report for one attempt while
--    another attempt of the occurrence is answered, in progress or completed keeps its state.
--    A kept state stores the log (outcome = the state) and records the inconsistency.
-- 6. The report's start time and duration are checked against the session's own times
--    (ringing_at <= answered_at <= ended_at <= now); the session's times stay consistent and
--    every discrepancy is recorded in call_logs.discrepancies.

alter table public.call_logs
  add column discrepancies jsonb not null default '[]'::jsonb;
comment on column public.call_logs.discrepancies is
  'What the post-call report said that did not fit the session: [{kind, detail, ...}].';

alter table public.webhook_events drop constraint webhook_events_status_check;
alter table public.webhook_events add constraint webhook_events_status_check
  check (private.one_of('webhook_events.status', status,
    '{received,processed,unmatched,ignored,failed,superseded}'));

-- How far the webhook's clock may disagree with the session's before it is a discrepancy.
create or replace function private.webhook_clock_tolerance() returns interval
language sql immutable as $$ select interval '2 minutes' $$;

-- Item 2: a conversation for the occurrence of p_session is known. Withdraw the occurrence's
-- other attempts that have not been answered (queued: never sent; ringing: the app's next
-- event gets 410), and close the missed_calls alert already raised for it. Returns the
-- number of sessions withdrawn.
create or replace function private.withdraw_after_conversation(p_session public.call_sessions)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_reason text := format('withdrawn: a conversation for this occurrence took place (attempt %s)',
                          p_session.attempt);
begin
  with withdrawn as (
    update public.call_sessions c
       set status = 'cancelled', ended_at = coalesce(c.ended_at, now()), failure_reason = v_reason
     where p_session.schedule_id is not null
       and c.schedule_id = p_session.schedule_id and c.occurrence_at = p_session.occurrence_at
       and c.id <> p_session.id and c.status in ('queued', 'ringing')
    returning c.id
  ),
  queue as (
    -- Rows a worker holds are left to it: its result no longer makes the session ring.
    update public.notification_queue q
       set status = 'cancelled', last_error = v_reason
      from withdrawn w
     where q.call_session_id = w.id and q.status in ('queued', 'due')
  )
  select count(*) into v_count from withdrawn;
  update public.alerts a
     set acknowledged_at = coalesce(a.acknowledged_at, now()),
         details = a.details || jsonb_build_object(
           'resolved', 'a conversation for this occurrence took place',
           'resolved_by_session', p_session.id)
   where a.relative_id = p_session.relative_id and a.kind = 'missed_calls'
     and a.acknowledged_at is null
     and (a.call_session_id = p_session.id
          or (p_session.schedule_id is not null
              and a.details ->> 'schedule_id' = p_session.schedule_id::text
              and (a.details ->> 'occurrence_at')::timestamptz = p_session.occurrence_at));
  return v_count;
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

    if v_next = 'in_progress' then
      perform private.withdraw_after_conversation(v_session);
    end if;
    if v_next = 'missed'
       and not private.occurrence_has_conversation(v_session.id, v_session.schedule_id,
                                                   v_session.occurrence_at) then
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

-- Ingest post_call_transcription into one call_logs row per session (the newest report wins),
-- apply what the report means in the session's state (items 5 and 6 above), and raise a
-- concerning_content alert when a configured field flags a concern. The log's household and
-- relative are the session's, never the payload's.
create or replace function private.ingest_transcription(
  p_event public.webhook_events, p_concern_fields text[], out o_session_id uuid,
  out o_household_id uuid, out o_status text, out o_error text)
language plpgsql
set search_path = ''
as $$
declare
  v_data jsonb := p_event.payload -> 'data';
  v_meta jsonb := private.json_object(v_data -> 'metadata');
  v_analysis jsonb := private.json_object(v_data -> 'analysis');
  v_tol interval := private.webhook_clock_tolerance();
  v_now timestamptz := now();
  v_match record;
  v_session public.call_sessions;
  v_newest timestamptz;
  v_other record;
  v_completes boolean;
  v_notes jsonb := '[]'::jsonb;
  v_started timestamptz;
  v_duration integer;
  v_lo timestamptz;
  v_start timestamptz;
  v_answered timestamptz;
  v_end timestamptz;
  v_ended timestamptz;
  v_device_end boolean;
  v_data_collection jsonb;
  v_evaluation jsonb;
  v_concerns text[];
  v_successful text;
  v_name text;
begin
  select * into v_match from private.webhook_session(v_data);
  v_session := v_match.o_session;
  o_error := v_match.o_reason;
  if v_session.id is null then
    o_status := 'unmatched';
    return;
  end if;
  o_session_id := v_session.id;
  o_household_id := v_session.household_id;

  -- Item 4: the newest report wins; an older one is kept for audit and changes nothing. (The
  -- session row is locked, so reports for one session are applied one at a time.)
  select max(w.event_timestamp) into v_newest from public.webhook_events w
   where w.call_session_id = v_session.id and w.event_type = 'post_call_transcription'
     and w.status = 'processed' and w.id <> p_event.id;
  if v_newest >= p_event.event_timestamp then
    o_status := 'superseded';
    o_error := format('a newer post_call_transcription (event_timestamp %s) was already applied',
                      v_newest);
    return;
  end if;

  v_started := to_timestamp(private.json_number(v_meta -> 'start_time_unix_secs'));
  v_duration := round(private.json_number(v_meta -> 'call_duration_secs'));
  select coalesce(jsonb_object_agg(e.key, e.value -> 'value'), '{}'::jsonb) into v_data_collection
    from jsonb_each(private.json_object(v_analysis -> 'data_collection_results')) e
   where jsonb_typeof(e.value) = 'object';
  select coalesce(jsonb_object_agg(e.key, e.value -> 'result'), '{}'::jsonb) into v_evaluation
    from jsonb_each(private.json_object(v_analysis -> 'evaluation_criteria_results')) e
   where jsonb_typeof(e.value) = 'object';
  select coalesce(array_agg(f order by f), '{}') into v_concerns
    from unnest(coalesce(p_concern_fields, '{}')) f
   where private.is_concerning(v_data_collection -> f)
      or private.json_text(v_evaluation -> f) = 'failure';
  v_successful := private.json_text(v_analysis -> 'call_successful');
  if v_successful not in ('success', 'failure', 'unknown') then
    v_successful := 'unknown';
  end if;

  -- Item 5: can a conversation have happened in this state?
  v_completes := v_session.status in ('queued', 'ringing', 'accepted', 'in_progress', 'missed',
                                      'completed')
                 or (v_session.status = 'failed' and v_session.answered_at is not null);
  if not v_completes then
    v_notes := v_notes || jsonb_build_object(
      'kind', 'state',
      'detail', format('session is %s (%s): the report was stored without changing it',
                       v_session.status,
                       case v_session.status
                         when 'expired' then 'never sent'
                         when 'cancelled' then 'cancelled before it was answered'
                         when 'declined' then 'declined on the device'
                         else 'never answered' end));
  elsif v_session.status <> 'completed' and v_session.schedule_id is not null then
    -- At most one completed session per occurrence: another attempt already answered wins.
    select c.id, c.attempt, c.status into v_other from public.call_sessions c
     where c.schedule_id = v_session.schedule_id and c.occurrence_at = v_session.occurrence_at
       and c.id <> v_session.id and c.status in ('accepted', 'in_progress', 'completed')
     order by c.attempt limit 1;
    if v_other.id is not null then
      v_completes := false;
      v_notes := v_notes || jsonb_build_object(
        'kind', 'state',
        'detail', format('session is %s: attempt %s of this occurrence is %s; the report was '
                         'stored without changing it', v_session.status, v_other.attempt,
                         v_other.status));
    end if;
  end if;
  if v_completes and v_session.status in ('missed', 'failed') then
    v_notes := v_notes || jsonb_build_object(
      'kind', 'reopened',
      'detail', format('session was %s (%s): the conversation took place', v_session.status,
                       coalesce(v_session.failure_reason, 'no reason')));
  end if;

  -- Item 6: the report's times against the session's own: a conversation starts after the
  -- phone rang (or the session existed) and ends before now.
  v_lo := coalesce(v_session.ringing_at, v_session.created_at);
  if v_started is not null then
    if v_started < v_lo - v_tol or v_started > v_now + v_tol then
      v_notes := v_notes || jsonb_build_object(
        'kind', 'start_time',
        'detail', 'the reported start is outside the session''s lifetime',
        'reported', v_started, 'earliest', v_lo, 'latest', v_now);
    end if;
    v_start := least(greatest(v_started, v_lo), v_now);
  end if;
  if v_session.answered_at is not null and v_started is not null
     and abs(extract(epoch from v_started - v_session.answered_at)) > extract(epoch from v_tol) then
    v_notes := v_notes || jsonb_build_object(
      'kind', 'answered_at',
      'detail', 'the reported start is far from the answer the device reported',
      'reported', v_started, 'answered_at', v_session.answered_at);
  end if;
  v_answered := coalesce(v_session.answered_at, v_start);
  if v_duration is not null and coalesce(v_start, v_answered) is not null then
    v_end := greatest(coalesce(v_start, v_answered), coalesce(v_answered, v_start))
             + make_interval(secs => v_duration);
  end if;
  -- The device's own "ended" stands; an end inferred by phase 2 (no_end_event), by a
  -- timeout or from an older report does not.
  v_device_end := v_session.status = 'completed' and v_session.failure_reason is null
                  and v_session.ended_at is not null and v_newest is null;
  v_ended := case when v_device_end then v_session.ended_at
                  else coalesce(v_end, v_session.ended_at, v_now) end;
  if v_end is not null and v_end > v_now + v_tol then
    v_notes := v_notes || jsonb_build_object(
      'kind', 'end_time', 'detail', 'the reported end is in the future', 'reported', v_end);
  end if;
  if v_device_end and v_end is not null
     and abs(extract(epoch from v_end - v_session.ended_at)) > extract(epoch from v_tol) then
    v_notes := v_notes || jsonb_build_object(
      'kind', 'ended_at',
      'detail', 'the reported end is far from the end the device reported',
      'reported', v_end, 'ended_at', v_session.ended_at);
  end if;
  v_ended := least(greatest(v_ended, coalesce(v_answered, v_ended)), v_now);
  v_answered := least(v_answered, v_ended);

  insert into public.call_logs as l (
    call_session_id, household_id, relative_id, conversation_id, outcome, started_at,
    duration_secs, transcript, summary, title, call_successful, mood, data_collection,
    evaluation, concerns, cost, termination_reason, discrepancies)
  values (
    v_session.id, v_session.household_id, v_session.relative_id, v_data ->> 'conversation_id',
    case when v_completes then 'completed' else v_session.status end, v_started, v_duration,
    case when jsonb_typeof(v_data -> 'transcript') = 'array' then v_data -> 'transcript'
         else '[]'::jsonb end,
    private.json_text(v_analysis -> 'transcript_summary'),
    private.json_text(v_analysis -> 'call_summary_title'),
    v_successful, private.json_text(v_data_collection -> 'mood'), v_data_collection,
    v_evaluation, v_concerns, private.json_number(v_meta -> 'cost'),
    private.json_text(v_meta -> 'termination_reason'), v_notes)
  on conflict (call_session_id) do update
    set conversation_id = excluded.conversation_id, outcome = excluded.outcome,
        started_at = excluded.started_at, duration_secs = excluded.duration_secs,
        transcript = excluded.transcript, summary = excluded.summary, title = excluded.title,
        call_successful = excluded.call_successful, mood = excluded.mood,
        data_collection = excluded.data_collection, evaluation = excluded.evaluation,
        concerns = excluded.concerns, cost = excluded.cost,
        termination_reason = excluded.termination_reason,
        discrepancies = excluded.discrepancies;

  if v_completes then
    update public.call_sessions c
       set status = 'completed', conversation_id = v_data ->> 'conversation_id',
           -- A failure the report disproves goes (the log's discrepancies keep it); phase 2's
           -- no_end_event stays: no end event did arrive.
           failure_reason = case when c.status = 'completed' then c.failure_reason end,
           answered_at = v_answered,
           ended_at = v_ended
     where c.id = v_session.id
    returning c.* into v_session;
    perform private.withdraw_after_conversation(v_session);
  end if;

  if cardinality(v_concerns) > 0 then
    select r.display_name into v_name from public.relatives r where r.id = v_session.relative_id;
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, details, dedupe_key)
    values (v_session.household_id, v_session.relative_id, v_session.id, v_session.device_id,
            'concerning_content', 'critical',
            format('%s''s call raised a concern: %s', v_name, array_to_string(v_concerns, ', ')),
            jsonb_build_object('fields', to_jsonb(v_concerns),
                               'summary', private.json_text(v_analysis -> 'transcript_summary')),
            'concerning_content:' || v_session.id)
    on conflict (dedupe_key) do nothing;
  end if;
  if jsonb_array_length(v_notes) > 0 then
    o_error := (select string_agg(coalesce(n ->> 'detail', n ->> 'kind'), '; ')
                  from jsonb_array_elements(v_notes) n);
  end if;
  o_status := 'processed';
end
$$;

revoke all on function private.withdraw_after_conversation(public.call_sessions),
  private.webhook_clock_tolerance() from public, anon, authenticated;
