-- A conversation belongs to the session whose own device answered it (issue 25, item 1).
--
-- Before: the post-call webhook was matched by the conversation id the app reported with
-- `connected`, or else by `call_session_id` in the dynamic variables. The variables are set
-- by the client when it starts the ElevenLabs conversation: a device of household B accepted
-- its own call, started the conversation with `call_session_id` = a ringing session of
-- household A, and the genuine signed webhook completed A's session and wrote B's text as
-- A's call log, which then reached A's next call as `last_call_summary` (a lasting prompt
-- injection).
--
-- Now:
-- * when the API mints a conversation token (prepare_call_accept / record_call_event on
--   `accepted`), the dynamic variables carry `call_binding`: HMAC-SHA256 under a server key
--   (private.conversation_keys) of "<session id>:<session's device id>". Only the session's
--   own, authenticated device is ever given it;
-- * private.webhook_session trusts a session only when
--   - the session's own device reported this conversation id (`connected`, or `ended` with
--     it), and no `call_session_id` / `call_binding` in the variables says otherwise; or
--   - the variables' `call_binding` verifies for the `call_session_id` they name.
--   Anything else (a bare `call_session_id`, a binding minted for another session) changes
--   no session and writes no log: the event is stored `unmatched` with the reason;
-- * call logs written through a verified match are marked (`call_logs.verified_at`); the
--   agent is told about earlier calls only from such logs, as bounded, flattened text
--   (`last_call_summary`: no control characters or braces, at most 500 characters).

create table private.conversation_keys (
  singleton boolean primary key default true
    constraint conversation_keys_singleton check (singleton),
  key bytea not null default extensions.gen_random_bytes(32)
    constraint conversation_keys_key_check check (length(key) >= 32),
  created_at timestamptz not null default now()
);
insert into private.conversation_keys default values;
revoke all on private.conversation_keys from public, anon, authenticated, service_role;

-- Logs that came from a verified match. Earlier logs cannot be told apart from the attack
-- above, so they stay unverified (null) and are never read back to the agent.
alter table public.call_logs add column verified_at timestamptz;
comment on column public.call_logs.verified_at is
  'when a post-call report bound to this session''s own device wrote this log (null: written '
  'before bindings existed; never read back to the agent)';

-- The binding of one session to its own device: hex HMAC-SHA256 under the server key.
-- Rotating the key (update private.conversation_keys set key = extensions.gen_random_bytes(32))
-- unbinds conversations started before; their webhooks still match by the conversation id
-- the device reported.
create or replace function private.conversation_binding(p_session_id uuid, p_device_id uuid)
returns text
language sql stable
set search_path = ''
as $$
  select encode(extensions.hmac(convert_to(p_session_id::text || ':' || p_device_id::text,
                                           'UTF8'), k.key, 'sha256'), 'hex')
  from private.conversation_keys k
$$;

-- Text from an earlier call, as the agent may see it: data, never a prompt. Control
-- characters and line breaks become spaces (no fake "system:" lines), braces go (no template
-- syntax), and it is cut to p_max characters.
create or replace function private.agent_text(p_text text, p_max integer)
returns text
language sql immutable
set search_path = ''
as $$
  select left(btrim(regexp_replace(
           translate(regexp_replace(coalesce(p_text, ''), '[[:cntrl:]]', ' ', 'g'), '{}', ''),
           '\s+', ' ', 'g')), p_max)
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
    'call_binding', private.conversation_binding(p_session.id, p_session.device_id),
    'last_call_summary', coalesce((
      select private.agent_text(l.summary, 500) from public.call_logs l
       where l.relative_id = p_session.relative_id and l.call_session_id <> p_session.id
         and l.summary is not null and l.verified_at is not null
       order by l.created_at desc limit 1), ''))
  from public.relatives r join public.households h on h.id = r.household_id
  where r.id = p_session.relative_id
$$;

-- The session a post-call event belongs to, by exact, verified keys only (see the header).
-- Returns the session (locked) or null with the reason it did not match.
create or replace function private.webhook_session(p_data jsonb)
returns private.webhook_match
language plpgsql
set search_path = ''
as $$
declare
  v_conversation text := private.json_text(p_data -> 'conversation_id');
  v_vars jsonb := p_data #> '{conversation_initiation_client_data,dynamic_variables}';
  v_var text := private.json_text(v_vars -> 'call_session_id');
  v_binding text := private.json_text(v_vars -> 'call_binding');
  v_var_id uuid;
  v_session public.call_sessions;
begin
  if v_conversation is null or btrim(v_conversation) = '' then
    raise exception 'invalid data.conversation_id: missing or not a string' using errcode = 'CP422';
  end if;
  if v_var ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_var_id := v_var::uuid;
  end if;
  -- Reported by the session's own (authenticated) device: trusted, unless the variables
  -- name another session or carry a binding that is not this session's.
  select c.* into v_session from public.call_sessions c
   where c.conversation_id = v_conversation for update of c;
  if v_session.id is not null then
    if v_var_id is not null and v_var_id <> v_session.id then
      return row(null, format('call_session_id %s does not match the session of conversation %s',
                              v_var_id, v_conversation))::private.webhook_match;
    end if;
    if v_binding is not null
       and v_binding is distinct from private.conversation_binding(v_session.id,
                                                                   v_session.device_id) then
      return row(null, format('call_binding does not verify for the session of conversation %s',
                              v_conversation))::private.webhook_match;
    end if;
    return row(v_session, null)::private.webhook_match;
  end if;
  if v_var_id is null then
    return row(null, case when v_var is null
                          then 'no session has this conversation id and no call_session_id was given'
                          else format('call_session_id "%s" is not a UUID', left(v_var, 60)) end
              )::private.webhook_match;
  end if;
  -- Only the variables point at a session: they are the client's, so they must carry the
  -- binding minted for that session's own device.
  if v_binding is null then
    return row(null, format('call_session_id %s came without call_binding: no device of that '
                            'session reported this conversation', v_var_id))::private.webhook_match;
  end if;
  select c.* into v_session from public.call_sessions c where c.id = v_var_id for update of c;
  if v_session.id is null then
    return row(null, format('call session %s does not exist', v_var_id))::private.webhook_match;
  elsif v_binding is distinct from private.conversation_binding(v_session.id,
                                                                v_session.device_id) then
    return row(null, format('call_binding does not verify for call session %s', v_var_id))
      ::private.webhook_match;
  elsif v_session.conversation_id is not null then
    return row(null, format('call session %s belongs to another conversation', v_var_id))
      ::private.webhook_match;
  end if;
  return row(v_session, null)::private.webhook_match;
end
$$;

-- API: ingest a stored event. Returns {"event_id", "status", "call_session_id", "error"}.
-- As before (20261124100300_webhooks.sql), and a processed transcription marks its log
-- verified: private.webhook_session matched it through a binding that verified.
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
        if v_result.o_status = 'processed' then
          update public.call_logs l set verified_at = now()
           where l.call_session_id = v_result.o_session_id;
        end if;
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

revoke all on function private.conversation_binding(uuid, uuid), private.agent_text(text, integer),
  private.conversation_variables(public.call_sessions), private.webhook_session(jsonb)
  from public, anon, authenticated, service_role;
revoke all on function public.process_webhook_event(uuid, text[]) from public, anon, authenticated;
grant execute on function public.process_webhook_event(uuid, text[]) to service_role;
