-- Old-app tolerance (issue 16): `ended` may carry the conversation id.
--
--   record_device_event(device, session, event, at, conversation_id)   what the API calls
--
-- The existing app reports only `accepted` and `ended`, never `connected`. Under the state
-- machine `ended` on an accepted call fails it ("the call ended before the conversation
-- connected"), and without a conversation id the post-call webhook can be matched only by the
-- `call_session_id` dynamic variable, which that app does not pass. An app that adds the
-- conversation id to its `ended` report is now understood: the conversation is reported, so
-- the call is completed, exactly as `connected` (with that id) then `ended` would have done,
-- in one transaction, through record_call_event itself (not redefined here; every check of
-- `connected` applies: an id that belongs to another call is 409). A call phase 2 already
-- failed for want of `connected` keeps its state, but learns the conversation id, so the
-- post-call webhook finds it and completes it (the webhook rule for "failed after an answer").
-- Every other event, and `ended` without a conversation id, goes to record_call_event as is.
create or replace function public.record_device_event(
  p_device_id uuid, p_session_id uuid, p_event text, p_at timestamptz,
  p_conversation_id text default null)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_session public.call_sessions;
  v_conversation text := nullif(btrim(p_conversation_id), '');
begin
  if p_event <> 'ended' or v_conversation is null then
    return public.record_call_event(p_device_id, p_session_id, p_event, p_at, p_conversation_id);
  end if;
  -- 401 for a revoked device, 404 for another device's session, as for any event; locked.
  v_session := private.device_session(p_device_id, p_session_id);
  if v_session.status = 'accepted' then
    perform public.record_call_event(p_device_id, p_session_id, 'connected', p_at,
                                     v_conversation);
  elsif v_session.status = 'failed' and v_session.answered_at is not null
        and v_session.conversation_id is null then
    if exists (select 1 from public.call_sessions c
               where c.conversation_id = v_conversation and c.id <> p_session_id) then
      raise exception 'invalid conversation_id: already belongs to another call'
        using errcode = 'CP409';
    end if;
    update public.call_sessions c set conversation_id = v_conversation
     where c.id = p_session_id;
  elsif v_session.conversation_id is not null and v_session.conversation_id <> v_conversation then
    raise exception 'event ended is not allowed: call session is % with another conversation',
      v_session.status using errcode = 'CP409';
  end if;
  return public.record_call_event(p_device_id, p_session_id, 'ended', p_at, null);
end
$$;

revoke all on function public.record_device_event(uuid, uuid, text, timestamptz, text)
  from public, anon, authenticated;
grant execute on function public.record_device_event(uuid, uuid, text, timestamptz, text)
  to service_role;
