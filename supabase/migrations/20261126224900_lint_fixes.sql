-- What plpgsql_check (`make lint`, and `supabase db lint`) reported, fixed. Only these two
-- redefinitions live here; their behaviour is unchanged.
--
-- 1. public.cleanup_finished: a false error in a database without pg_cron. Its EXECUTE string
--    was a constant naming cron.job_run_details, which plpgsql_check checks as if it were static
--    SQL ("relation does not exist"), although the statement only runs when the table exists.
--    It now deletes from the table it found (by oid), so nothing names a table that may be absent.
-- 2. private.webhook_session: "composite OUT variable o_session is not single argument". A
--    composite OUT parameter beside another OUT parameter is ambiguous to callers; it now returns
--    one named composite, private.webhook_match (o_session, o_reason), which its callers read
--    exactly as before (`select * into v_match from private.webhook_session(...)`).

create or replace function public.cleanup_finished(p_now timestamptz default now())
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
  v_cfg private.scheduler_settings;
  v_history regclass;
begin
  select * into v_cfg from private.scheduler_settings;
  delete from public.notification_queue q
   where q.status in ('sent', 'failed', 'expired', 'cancelled')
     and q.updated_at < p_now - v_cfg.retention;
  get diagnostics v_count = row_count;
  -- pg_cron's history, where it exists and the caller may trim it (looked up by oid: naming
  -- it would need usage on the cron schema, which service_role does not have).
  select c.oid::regclass into v_history
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where n.nspname = 'cron' and c.relname = 'job_run_details'
     and pg_catalog.has_schema_privilege(n.oid, 'USAGE')
     and pg_catalog.has_table_privilege(c.oid, 'DELETE');
  if v_history is not null then
    execute format('delete from %s where end_time < $1', v_history)
      using p_now - v_cfg.cron_history;
  end if;
  return v_count;
end
$$;

-- The return type changes (OUT parameters -> a named composite), which `create or replace`
-- cannot do: drop and create in this one transaction. Callers are PL/pgSQL and resolve the
-- function when they run, so nothing else has to change.
drop function private.webhook_session(jsonb);

create type private.webhook_match as (o_session public.call_sessions, o_reason text);

-- The session a post-call event belongs to, by exact keys only: the ElevenLabs conversation
-- id the app reported with "connected", else our call session id from the dynamic variables
-- (only while that session has no other conversation). Never "the latest session".
-- Returns the session (locked) or null with the reason it did not match.
create function private.webhook_session(p_data jsonb)
returns private.webhook_match
language plpgsql
set search_path = ''
as $$
declare
  v_conversation text := private.json_text(p_data -> 'conversation_id');
  v_var text := private.json_text(
    p_data #> '{conversation_initiation_client_data,dynamic_variables,call_session_id}');
  v_var_id uuid;
  v_session public.call_sessions;
begin
  if v_conversation is null or btrim(v_conversation) = '' then
    raise exception 'invalid data.conversation_id: missing or not a string' using errcode = 'CP422';
  end if;
  if v_var ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    v_var_id := v_var::uuid;
  end if;
  select c.* into v_session from public.call_sessions c
   where c.conversation_id = v_conversation for update of c;
  if v_session.id is not null then
    if v_var_id is not null and v_var_id <> v_session.id then
      return row(null, format('call_session_id %s does not match the session of conversation %s',
                              v_var_id, v_conversation))::private.webhook_match;
    end if;
    return row(v_session, null)::private.webhook_match;
  end if;
  if v_var_id is null then
    return row(null, case when v_var is null
                          then 'no session has this conversation id and no call_session_id was given'
                          else format('call_session_id "%s" is not a UUID', left(v_var, 60)) end
              )::private.webhook_match;
  end if;
  select c.* into v_session from public.call_sessions c where c.id = v_var_id for update of c;
  if v_session.id is null then
    return row(null, format('call session %s does not exist', v_var_id))::private.webhook_match;
  elsif v_session.conversation_id is not null then
    return row(null, format('call session %s belongs to another conversation', v_var_id))
      ::private.webhook_match;
  end if;
  return row(v_session, null)::private.webhook_match;
end
$$;

revoke all on function private.webhook_session(jsonb) from public, anon, authenticated;
