-- The ElevenLabs post-call webhook (issue 6): store first, then ingest.
--
-- The API verifies the signature over the raw body and checks the envelope, then
-- store_webhook_event() keeps the event (deduplicated on type + conversation + event time),
-- and process_webhook_event() ingests it in a transaction of its own: a failure there rolls
-- back everything the ingestion wrote and marks the stored event `failed` with the reason, so
-- nothing received is lost and nothing is half-written. A redelivery of an event that failed
-- or was never processed is processed again.

-- Requests refused before anything was stored (bad signature, malformed body, too large):
-- only counted, never kept.
create table private.webhook_rejections (
  provider text not null,
  reason text not null
    constraint webhook_rejections_reason_check
    check (private.matches('webhook_rejections.reason', reason, '^[a-z_]{1,40}$',
                           'must be a short snake_case reason')),
  count bigint not null default 0,
  last_at timestamptz,
  primary key (provider, reason)
);
revoke all on private.webhook_rejections from public, anon, authenticated;
grant select on private.webhook_rejections to service_role;

create or replace function public.count_webhook_rejection(p_reason text)
returns bigint
language sql security definer
set search_path = ''
as $$
  insert into private.webhook_rejections as w (provider, reason, count, last_at)
  values ('elevenlabs', p_reason, 1, now())
  on conflict (provider, reason) do update set count = w.count + 1, last_at = now()
  returning w.count
$$;

-- JSON scalars as SQL values; anything of another type reads as null.
create or replace function private.json_text(p_value jsonb) returns text
language sql immutable
as $$
  select case jsonb_typeof(p_value) when 'string' then p_value #>> '{}'
                                    when 'number' then p_value #>> '{}'
                                    when 'boolean' then p_value #>> '{}' end
$$;
create or replace function private.json_number(p_value jsonb) returns numeric
language sql immutable
as $$ select case when jsonb_typeof(p_value) = 'number' then (p_value #>> '{}')::numeric end $$;
create or replace function private.json_object(p_value jsonb) returns jsonb
language sql immutable
as $$ select case when jsonb_typeof(p_value) = 'object' then p_value else '{}'::jsonb end $$;

-- Whether a data-collection value flags a concern: true, a non-zero number, or text other
-- than a plain "no".
create or replace function private.is_concerning(p_value jsonb) returns boolean
language sql immutable
as $$
  select case jsonb_typeof(p_value)
           when 'boolean' then p_value = 'true'::jsonb
           when 'number' then (p_value #>> '{}')::numeric <> 0
           when 'string' then lower(btrim(p_value #>> '{}'))
                              not in ('', 'no', 'none', 'false', 'n/a', 'null', '0', 'nothing')
           else false end
$$;

-- API: keep an event as received. Returns the stored event's id and status, and whether it
-- was a redelivery of one stored before. The audio of post_call_audio is never stored.
create or replace function public.store_webhook_event(p_payload jsonb, p_payload_bytes integer)
returns table (event_id uuid, status text, duplicate boolean)
language plpgsql security definer
set search_path = ''
as $$
declare
  v_type text := case when jsonb_typeof(p_payload -> 'type') = 'string' then p_payload ->> 'type' end;
  v_ts numeric := private.json_number(p_payload -> 'event_timestamp');
  v_conversation text := private.json_text(p_payload #> '{data,conversation_id}');
  v_key text;
  v_id uuid;
begin
  if v_type is null or btrim(v_type) = '' then
    raise exception 'invalid type: must be a non-empty string' using errcode = 'CP422';
  end if;
  if v_ts is null or v_ts < 0 or v_ts > 1e11 then
    raise exception 'invalid event_timestamp: must be a UNIX time in seconds' using errcode = 'CP422';
  end if;
  if jsonb_typeof(p_payload -> 'data') is distinct from 'object' then
    raise exception 'invalid data: must be an object' using errcode = 'CP422';
  end if;
  v_key := format('elevenlabs:%s:%s:%s', v_type, coalesce(v_conversation, ''), v_ts);
  insert into public.webhook_events as w (provider, event_type, event_timestamp, conversation_id,
                                          dedupe_key, payload, payload_bytes)
  values ('elevenlabs', left(v_type, 100), to_timestamp(v_ts), v_conversation, v_key,
          case when v_type = 'post_call_audio' then p_payload #- '{data,full_audio}'
               else p_payload end,
          coalesce(p_payload_bytes, 0))
  on conflict (dedupe_key) do nothing
  returning w.id into v_id;
  if v_id is not null then
    return query select v_id, 'received'::text, false;
  else
    return query select w.id, w.status, true from public.webhook_events w where w.dedupe_key = v_key;
  end if;
end
$$;

-- The session a post-call event belongs to, by exact keys only: the ElevenLabs conversation
-- id the app reported with "connected", else our call session id from the dynamic variables
-- (only while that session has no other conversation). Never "the latest session".
-- Returns the session (locked) or null with the reason it did not match.
create or replace function private.webhook_session(p_data jsonb, out o_session public.call_sessions,
                                                   out o_reason text)
language plpgsql
set search_path = ''
as $$
declare
  v_conversation text := private.json_text(p_data -> 'conversation_id');
  v_var text := private.json_text(
    p_data #> '{conversation_initiation_client_data,dynamic_variables,call_session_id}');
  v_var_id uuid;
begin
  if v_conversation is null or btrim(v_conversation) = '' then
    raise exception 'invalid data.conversation_id: missing or not a string' using errcode = 'CP422';
  end if;
  if v_var ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_var_id := v_var::uuid;
  end if;
  select c.* into o_session from public.call_sessions c
   where c.conversation_id = v_conversation for update of c;
  if o_session.id is not null then
    if v_var_id is not null and v_var_id <> o_session.id then
      o_session := null;
      o_reason := format('call_session_id %s does not match the session of conversation %s',
                         v_var_id, v_conversation);
    end if;
    return;
  end if;
  if v_var_id is null then
    o_reason := case when v_var is null then 'no session has this conversation id and no call_session_id was given'
                     else format('call_session_id "%s" is not a UUID', left(v_var, 60)) end;
    return;
  end if;
  select c.* into o_session from public.call_sessions c where c.id = v_var_id for update of c;
  if o_session.id is null then
    o_reason := format('call session %s does not exist', v_var_id);
  elsif o_session.conversation_id is not null then
    o_session := null;
    o_reason := format('call session %s belongs to another conversation', v_var_id);
  end if;
end
$$;

-- Ingest post_call_transcription into one call_logs row per session, complete the session,
-- and raise a concerning_content alert when a configured field flags a concern. The log's
-- household and relative are the session's, never the payload's.
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
  v_match record;
  v_session public.call_sessions;
  v_started timestamptz;
  v_duration integer;
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

  insert into public.call_logs as l (
    call_session_id, household_id, relative_id, conversation_id, outcome, started_at,
    duration_secs, transcript, summary, title, call_successful, mood, data_collection,
    evaluation, concerns, cost, termination_reason)
  values (
    v_session.id, v_session.household_id, v_session.relative_id, v_data ->> 'conversation_id',
    'completed', v_started, v_duration,
    case when jsonb_typeof(v_data -> 'transcript') = 'array' then v_data -> 'transcript'
         else '[]'::jsonb end,
    private.json_text(v_analysis -> 'transcript_summary'),
    private.json_text(v_analysis -> 'call_summary_title'),
    v_successful, private.json_text(v_data_collection -> 'mood'), v_data_collection,
    v_evaluation, v_concerns, private.json_number(v_meta -> 'cost'),
    private.json_text(v_meta -> 'termination_reason'))
  on conflict (call_session_id) do update
    set conversation_id = excluded.conversation_id, outcome = excluded.outcome,
        started_at = excluded.started_at, duration_secs = excluded.duration_secs,
        transcript = excluded.transcript, summary = excluded.summary, title = excluded.title,
        call_successful = excluded.call_successful, mood = excluded.mood,
        data_collection = excluded.data_collection, evaluation = excluded.evaluation,
        concerns = excluded.concerns, cost = excluded.cost,
        termination_reason = excluded.termination_reason;

  -- The conversation happened: the session is completed whatever the app reported.
  update public.call_sessions c
     set status = 'completed', conversation_id = v_data ->> 'conversation_id',
         failure_reason = null,
         answered_at = coalesce(c.answered_at, v_started),
         ended_at = coalesce(c.ended_at, v_started + make_interval(secs => v_duration), now())
   where c.id = v_session.id;

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
  o_session_id := v_session.id;
  o_household_id := v_session.household_id;
  o_status := 'processed';
end
$$;

-- API: ingest a stored event. Returns {"event_id", "status", "call_session_id", "error"}.
create or replace function public.process_webhook_event(p_event_id uuid, p_concern_fields text[])
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_event public.webhook_events;
  v_result record;
  v_match record;
  v_session public.call_sessions;
begin
  select w.* into v_event from public.webhook_events w where w.id = p_event_id for update of w;
  if v_event.id is null then
    raise exception 'webhook event % not found', p_event_id using errcode = 'P0002';
  end if;
  if v_event.status in ('received', 'failed') then
    begin
      if v_event.event_type = 'post_call_transcription' then
        select * into v_result from private.ingest_transcription(v_event, p_concern_fields);
        v_event.status := v_result.o_status;
        v_event.error := v_result.o_error;
        v_event.call_session_id := v_result.o_session_id;
        v_event.household_id := v_result.o_household_id;
      elsif v_event.event_type = 'post_call_audio' then
        -- Acknowledged and linked to its session; the audio itself was never stored.
        select * into v_match from private.webhook_session(v_event.payload -> 'data');
        v_session := v_match.o_session;
        v_event.status := case when v_session.id is null then 'unmatched' else 'processed' end;
        v_event.call_session_id := v_session.id;
        v_event.household_id := v_session.household_id;
        v_event.error := v_match.o_reason;
      else
        v_event.status := 'ignored';
        v_event.error := format('event type %s is not used', left(v_event.event_type, 60));
      end if;
    exception when others then
      -- Everything the ingestion wrote is rolled back; the event stays, marked failed.
      v_event.status := 'failed';
      v_event.error := sqlerrm;
      v_event.call_session_id := null;
      v_event.household_id := null;
    end;
    update public.webhook_events w
       set status = v_event.status, error = v_event.error,
           call_session_id = v_event.call_session_id, household_id = v_event.household_id,
           processed_at = now()
     where w.id = p_event_id;
  end if;
  return jsonb_build_object('event_id', v_event.id, 'status', v_event.status,
                            'call_session_id', v_event.call_session_id, 'error', v_event.error);
end
$$;

revoke all on function public.count_webhook_rejection(text), public.store_webhook_event(jsonb, integer),
  public.process_webhook_event(uuid, text[]), private.webhook_session(jsonb),
  private.ingest_transcription(public.webhook_events, text[])
  from public, anon, authenticated;
grant execute on function public.count_webhook_rejection(text), public.store_webhook_event(jsonb, integer),
  public.process_webhook_event(uuid, text[]) to service_role;
