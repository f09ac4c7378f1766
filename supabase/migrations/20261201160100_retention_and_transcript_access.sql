-- Issue 24, items 1, 3 and 4: retention per household, who reads a transcript, and export.
--
-- Retention: `public.privacy_settings` (one row per household, made with it) holds a period for
-- each kind of data; `public.enforce_retention(p_now)`, run by the daily cleanup job, removes the
-- content that is older and keeps what statistics need (the session's state, times, outcome).
-- `public.privacy_overview` shows the household its settings and when each kind goes.
--
-- Transcripts: the transcript-class columns of call_logs (transcript, data_collection,
-- evaluation, discrepancies) are no longer readable by `authenticated` through the table, any
-- view or Realtime (publication column list); `public.read_transcript` is the only way, and it
-- records who read which call when in `public.transcript_reads` (admins read it; nobody edits
-- it). Admins may always read; plain members only when the household's `member_reads` is
-- 'transcripts' (the default is 'summaries').
--
-- Export: `public.export_relative` gives an admin everything about a relative as one document.

create table public.privacy_settings (
  household_id uuid primary key references public.households (id) on delete cascade,
  member_reads text not null default 'summaries'
    constraint privacy_settings_member_reads_check
    check (private.one_of('privacy_settings.member_reads', member_reads, '{transcripts,summaries}')),
  webhook_bodies interval not null default '7 days'
    constraint privacy_settings_webhook_bodies_check
    check (private.between_('privacy_settings.webhook_bodies', webhook_bodies, '1 day', '3650 days')),
  audio_refs interval not null default '30 days'
    constraint privacy_settings_audio_refs_check
    check (private.between_('privacy_settings.audio_refs', audio_refs, '1 day', '3650 days')),
  transcripts interval not null default '90 days'
    constraint privacy_settings_transcripts_check
    check (private.between_('privacy_settings.transcripts', transcripts, '1 day', '3650 days')),
  summaries interval not null default '365 days'
    constraint privacy_settings_summaries_check
    check (private.between_('privacy_settings.summaries', summaries, '1 day', '3650 days')),
  call_logs interval not null default '730 days'
    constraint privacy_settings_call_logs_check
    check (private.between_('privacy_settings.call_logs', call_logs, '1 day', '3650 days')),
  snapshots interval not null default '30 days'
    constraint privacy_settings_snapshots_check
    check (private.between_('privacy_settings.snapshots', snapshots, '1 day', '3650 days')),
  alert_messages interval not null default '365 days'
    constraint privacy_settings_alert_messages_check
    check (private.between_('privacy_settings.alert_messages', alert_messages, '1 day', '3650 days')),
  updated_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index privacy_settings_updated_by_idx on public.privacy_settings (updated_by);
create trigger privacy_settings_touch before update on public.privacy_settings
  for each row execute function private.touch_updated_at();
alter table public.privacy_settings enable row level security;
create policy privacy_settings_select on public.privacy_settings for select to authenticated
  using (household_id in (select private.member_household_ids()));
revoke all on public.privacy_settings from public, anon, authenticated;
grant select on public.privacy_settings to authenticated;
grant all on public.privacy_settings to service_role;

create or replace function private.households_privacy_defaults()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.privacy_settings (household_id) values (new.id) on conflict do nothing;
  return null;
end
$$;
create trigger households_privacy_defaults after insert on public.households
  for each row execute function private.households_privacy_defaults();
insert into public.privacy_settings (household_id) select h.id from public.households h
on conflict do nothing;

-- What expired, on the log itself (the dashboard says "expired" rather than "empty").
alter table public.call_logs add column transcript_expired_at timestamptz;
alter table public.call_logs add column summary_expired_at timestamptz;

-- The audit of transcript reads. Rows go only with their call (erasure, retention of the log).
create table public.transcript_reads (
  id bigint generated always as identity primary key,
  household_id uuid not null references public.households (id) on delete cascade,
  call_session_id uuid not null references public.call_sessions (id) on delete cascade,
  user_id uuid,
  via text not null default 'read'
    constraint transcript_reads_via_check check (private.one_of('transcript_reads.via', via, '{read,export}')),
  read_at timestamptz not null default now()
);
create index transcript_reads_household_idx on public.transcript_reads (household_id, read_at desc);
create index transcript_reads_session_idx on public.transcript_reads (call_session_id);
alter table public.transcript_reads enable row level security;
create policy transcript_reads_select on public.transcript_reads for select to authenticated
  using (household_id in (select private.admin_household_ids()));
revoke all on public.transcript_reads from public, anon, authenticated, service_role;
grant select on public.transcript_reads to authenticated, service_role;

create or replace function private.transcript_reads_immutable()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- Deleting is allowed only as the cascade of its call's (or household's) deletion.
  if tg_op = 'DELETE'
     and (not exists (select 1 from public.call_sessions s where s.id = old.call_session_id)
          or not exists (select 1 from public.households h where h.id = old.household_id)) then
    return old;
  end if;
  raise exception 'transcript_reads is an audit log: its rows cannot be changed or deleted'
    using errcode = '42501';
end
$$;
create trigger transcript_reads_immutable before update or delete on public.transcript_reads
  for each row execute function private.transcript_reads_immutable();
-- TRUNCATE is granted to nobody; the owner keeps it (a test database is emptied with
-- `truncate households cascade`, and the owner could drop this trigger anyway).

-- The transcript-class columns leave the table's grant (and Realtime's column list).
revoke select on public.call_logs from authenticated;
grant select (id, call_session_id, household_id, relative_id, conversation_id, outcome, started_at,
              duration_secs, summary, title, call_successful, mood, concerns, cost,
              termination_reason, created_at, updated_at, verified_at, transcript_expired_at,
              summary_expired_at)
  on public.call_logs to authenticated;
do $$
begin
  if exists (select 1 from pg_catalog.pg_publication_tables t
             where t.pubname = 'supabase_realtime' and t.schemaname = 'public'
               and t.tablename = 'call_logs') then
    alter publication supabase_realtime drop table public.call_logs;
    alter publication supabase_realtime add table public.call_logs
      (id, call_session_id, household_id, relative_id, outcome, started_at, duration_secs,
       summary, title, call_successful, mood, concerns, created_at, updated_at, verified_at,
       transcript_expired_at, summary_expired_at);
  end if;
end
$$;

create or replace function public.read_transcript(p_call_session_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_log public.call_logs;
  v_reads text;
begin
  select l.* into v_log from public.call_logs l where l.call_session_id = p_call_session_id;
  if v_log.id is null or v_log.household_id not in (select private.member_household_ids()) then
    raise exception 'invalid read_transcript.p_call_session_id: no call log of yours has this id'
      using errcode = 'P0002';
  end if;
  select s.member_reads into v_reads from public.privacy_settings s
   where s.household_id = v_log.household_id;
  if v_log.household_id not in (select private.admin_household_ids())
     and coalesce(v_reads, 'summaries') <> 'transcripts' then
    raise exception 'transcripts of this household are for its admins only (members see summaries)'
      using errcode = '42501';
  end if;
  insert into public.transcript_reads (household_id, call_session_id, user_id, via, read_at)
  values (v_log.household_id, v_log.call_session_id, (select auth.uid()), 'read', p_now);
  return jsonb_build_object(
    'call_session_id', v_log.call_session_id, 'relative_id', v_log.relative_id,
    'started_at', v_log.started_at, 'duration_secs', v_log.duration_secs,
    'transcript', v_log.transcript, 'data_collection', v_log.data_collection,
    'evaluation', v_log.evaluation, 'discrepancies', v_log.discrepancies,
    'summary', v_log.summary, 'transcript_expired_at', v_log.transcript_expired_at);
end
$$;

-- Retention. Each statement keeps the row and its statistics, and empties the content.
create or replace function public.enforce_retention(p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
  v_out jsonb := '{}'::jsonb;
begin
  -- Rows no household claims (an unmatched webhook) get the defaults (7 and 30 days).
  update public.webhook_events w set payload = null
    from (select w2.id from public.webhook_events w2
          left join public.privacy_settings s on s.household_id = w2.household_id
          where w2.payload is not null
            and w2.received_at < p_now - case when w2.event_type = 'post_call_audio'
                                              then coalesce(s.audio_refs, interval '30 days')
                                              else coalesce(s.webhook_bodies, interval '7 days') end) x
   where w.id = x.id;
  get diagnostics v_n = row_count;
  v_out := v_out || jsonb_build_object('webhook_bodies', v_n);
  -- Late webhooks for erased conversations (see 20261201160000_erasure.sql): a day is enough.
  delete from public.webhook_events w
   where w.error = 'the conversation was erased' and w.received_at < p_now - interval '1 day';

  update public.call_logs l
     set transcript = '[]'::jsonb, data_collection = '{}'::jsonb, evaluation = '{}'::jsonb,
         discrepancies = '[]'::jsonb, transcript_expired_at = p_now
    from public.privacy_settings s
   where s.household_id = l.household_id and l.transcript_expired_at is null
     and l.created_at < p_now - s.transcripts;
  get diagnostics v_n = row_count;
  v_out := v_out || jsonb_build_object('transcripts', v_n);

  update public.call_logs l
     set summary = null, title = null, summary_expired_at = p_now
    from public.privacy_settings s
   where s.household_id = l.household_id and l.summary_expired_at is null
     and l.created_at < p_now - s.summaries;
  get diagnostics v_n = row_count;
  v_out := v_out || jsonb_build_object('summaries', v_n);

  -- The session keeps its state, times and outcome; the log (duration, mood, cost) goes.
  delete from public.call_logs l using public.privacy_settings s
   where s.household_id = l.household_id and l.created_at < p_now - s.call_logs;
  get diagnostics v_n = row_count;
  v_out := v_out || jsonb_build_object('call_logs', v_n);

  -- Queue snapshots: the name, ids and push tokens the push carried.
  update public.notification_queue q
     set payload = '{}'::jsonb, push_token = '', fallback_provider = null, fallback_token = null
    from public.privacy_settings s
   where s.household_id = q.household_id
     and q.status in ('sent', 'failed', 'expired', 'cancelled')
     and q.updated_at < p_now - s.snapshots and (q.payload <> '{}'::jsonb or q.push_token <> '');
  get diagnostics v_n = row_count;
  update private.cancel_notices c set push_token = ''
    from public.privacy_settings s
   where s.household_id = c.household_id and c.status in ('sent', 'failed', 'expired')
     and c.updated_at < p_now - s.snapshots and c.push_token <> '';
  v_out := v_out || jsonb_build_object('snapshots', v_n);

  -- Alert messages: the text and details go; kind, severity, times and acknowledgement stay.
  with old as (
    update public.alerts a
       set message = 'expired ' || a.kind || ' alert', details = jsonb_build_object('expired', true)
      from public.privacy_settings s
     where s.household_id = a.household_id and a.created_at < p_now - s.alert_messages
       and not coalesce((a.details ->> 'expired')::boolean, false)
    returning a.id
  ), told as (
    update private.outbox o set payload = jsonb_build_object('expired', true)
      from old where o.alert_id = old.id and o.status not in ('queued', 'claimed')
    returning o.id
  ), uses as (
    update private.alert_link_uses u set result = '{}'::jsonb from told where u.outbox_id = told.id
  ), replies as (
    delete from private.sms_replies r using old where r.result ->> 'alert_id' = old.id::text
  )
  select count(*) into v_n from old;
  v_out := v_out || jsonb_build_object('alert_messages', v_n);
  return v_out;
end
$$;

-- The household's settings and, for each kind of data, when its oldest item goes.
create or replace function public.privacy_overview(p_household_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_s public.privacy_settings;
begin
  if p_household_id is null or p_household_id not in (select private.member_household_ids()) then
    raise exception 'invalid privacy_overview.p_household_id: not found' using errcode = 'P0002';
  end if;
  select s.* into v_s from public.privacy_settings s where s.household_id = p_household_id;
  return jsonb_build_object(
    'household_id', p_household_id,
    'as_of', p_now,
    'member_reads', v_s.member_reads,
    'kinds', jsonb_build_array(
      jsonb_build_object('kind', 'webhook_bodies', 'period', v_s.webhook_bodies,
        'removes', 'the raw body of each ElevenLabs webhook (transcript included)',
        'keeps', 'event type, times, status',
        'oldest_goes_at', (select min(w.received_at) + v_s.webhook_bodies from public.webhook_events w
                           where w.household_id = p_household_id and w.payload is not null
                             and w.event_type <> 'post_call_audio')),
      jsonb_build_object('kind', 'audio_refs', 'period', v_s.audio_refs,
        'removes', 'post_call_audio bodies (the reference to the audio ElevenLabs holds)',
        'keeps', 'event type, times, status',
        'oldest_goes_at', (select min(w.received_at) + v_s.audio_refs from public.webhook_events w
                           where w.household_id = p_household_id and w.payload is not null
                             and w.event_type = 'post_call_audio')),
      jsonb_build_object('kind', 'transcripts', 'period', v_s.transcripts,
        'removes', 'transcript, data collection, evaluation, discrepancies',
        'keeps', 'the call log''s summary, mood, duration',
        'oldest_goes_at', (select min(l.created_at) + v_s.transcripts from public.call_logs l
                           where l.household_id = p_household_id and l.transcript_expired_at is null)),
      jsonb_build_object('kind', 'summaries', 'period', v_s.summaries,
        'removes', 'summary and title', 'keeps', 'mood, concerns, duration',
        'oldest_goes_at', (select min(l.created_at) + v_s.summaries from public.call_logs l
                           where l.household_id = p_household_id and l.summary_expired_at is null)),
      jsonb_build_object('kind', 'call_logs', 'period', v_s.call_logs,
        'removes', 'the whole call log', 'keeps', 'the call session: state, times, outcome',
        'oldest_goes_at', (select min(l.created_at) + v_s.call_logs from public.call_logs l
                           where l.household_id = p_household_id)),
      jsonb_build_object('kind', 'snapshots', 'period', v_s.snapshots,
        'removes', 'the push payload (name, ids) and push tokens of finished queue rows and cancel notices',
        'keeps', 'status and times',
        'oldest_goes_at', (select min(q.updated_at) + v_s.snapshots from public.notification_queue q
                           where q.household_id = p_household_id
                             and q.status in ('sent', 'failed', 'expired', 'cancelled')
                             and (q.payload <> '{}'::jsonb or q.push_token <> ''))),
      jsonb_build_object('kind', 'alert_messages', 'period', v_s.alert_messages,
        'removes', 'alert text and details, the messages sent about them, SMS replies',
        'keeps', 'kind, severity, times, acknowledgement, delivery status',
        'oldest_goes_at', (select min(a.created_at) + v_s.alert_messages from public.alerts a
                           where a.household_id = p_household_id
                             and not coalesce((a.details ->> 'expired')::boolean, false)))));
end
$$;

-- Admins change the settings: any subset of the keys above (intervals as text, e.g. '30 days').
create or replace function public.set_privacy_settings(p_household_id uuid, p_settings jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_key text;
  v_keys text[] := array['member_reads', 'webhook_bodies', 'audio_refs', 'transcripts', 'summaries',
                         'call_logs', 'snapshots', 'alert_messages'];
  v_row public.privacy_settings;
begin
  perform private.require_erasing_admin('set_privacy_settings.p_household_id', p_household_id);
  if p_settings is null or jsonb_typeof(p_settings) <> 'object' then
    raise exception 'invalid p_settings: a JSON object is required' using errcode = '22023';
  end if;
  for v_key in select k from jsonb_object_keys(p_settings) k loop
    if not v_key = any (v_keys) then
      raise exception 'invalid p_settings.%: not a setting (one of %)', left(v_key, 60),
        array_to_string(v_keys, ', ') using errcode = '22023';
    end if;
    if v_key <> 'member_reads' then
      begin
        perform (p_settings ->> v_key)::interval;
      exception when others then
        raise exception 'invalid p_settings.%: "%" is not a period such as ''30 days''', v_key,
          left(p_settings ->> v_key, 60) using errcode = '22023';
      end;
    end if;
  end loop;
  select s.* into v_row from public.privacy_settings s where s.household_id = p_household_id for update;
  v_row := jsonb_populate_record(v_row, p_settings);
  update public.privacy_settings s
     set member_reads = v_row.member_reads, webhook_bodies = v_row.webhook_bodies,
         audio_refs = v_row.audio_refs, transcripts = v_row.transcripts,
         summaries = v_row.summaries, call_logs = v_row.call_logs, snapshots = v_row.snapshots,
         alert_messages = v_row.alert_messages, updated_by = (select auth.uid())
   where s.household_id = p_household_id;
  return public.privacy_overview(p_household_id);
end
$$;

-- Export (Art. 15 and 20): everything we hold about one relative, for an admin. The document's
-- shape is in the README ("Privacy: export"). Every exported transcript is an audited read.
create or replace function public.export_relative(p_relative_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_rel public.relatives;
  v_doc jsonb;
begin
  select r.* into v_rel from public.relatives r where r.id = p_relative_id;
  perform private.require_erasing_admin('export_relative.p_relative_id', v_rel.household_id);
  insert into public.transcript_reads (household_id, call_session_id, user_id, via, read_at)
  select l.household_id, l.call_session_id, (select auth.uid()), 'export', p_now
    from public.call_logs l where l.relative_id = p_relative_id;
  v_doc := jsonb_build_object(
    'format', 'callpanion.relative-export/1',
    'exported_at', p_now,
    'exported_by', (select auth.uid()),
    'relative', jsonb_build_object('id', v_rel.id, 'display_name', v_rel.display_name,
                                   'timezone', v_rel.timezone, 'created_at', v_rel.created_at),
    'household', (select jsonb_build_object('id', h.id, 'name', h.name)
                  from public.households h where h.id = v_rel.household_id),
    'privacy_settings', (select to_jsonb(s) - 'household_id' - 'updated_by'
                         from public.privacy_settings s where s.household_id = v_rel.household_id),
    'schedules', coalesce((select jsonb_agg(to_jsonb(s) - 'household_id' - 'relative_id'
                                            order by s.created_at)
                           from public.schedules s where s.relative_id = p_relative_id), '[]'),
    'devices', coalesce((select jsonb_agg(jsonb_build_object(
                           'id', d.id, 'status', d.status, 'platform', d.platform, 'label', d.label,
                           'app_version', d.app_version, 'paired_at', d.paired_at,
                           'last_seen_at', d.last_seen_at, 'revoked_at', d.revoked_at,
                           'push_tokens', jsonb_strip_nulls(jsonb_build_object(
                             'fcm', d.fcm_token, 'voip', d.voip_token, 'apns', d.apns_token)))
                           order by d.created_at)
                         from public.device_pairs d where d.relative_id = p_relative_id), '[]'),
    'calls', coalesce((select jsonb_agg(jsonb_build_object(
                         'call_session_id', s.id, 'occurrence_at', s.occurrence_at,
                         'origin', s.origin, 'attempt', s.attempt, 'status', s.status,
                         'failure_reason', s.failure_reason, 'conversation_id', s.conversation_id,
                         'ringing_at', s.ringing_at, 'answered_at', s.answered_at,
                         'ended_at', s.ended_at,
                         'log', (select to_jsonb(l) - 'household_id' - 'relative_id'
                                 from public.call_logs l where l.call_session_id = s.id))
                         order by s.occurrence_at, s.id)
                       from public.call_sessions s where s.relative_id = p_relative_id), '[]'),
    'alerts', coalesce((select jsonb_agg(jsonb_build_object(
                          'id', a.id, 'kind', a.kind, 'severity', a.severity, 'message', a.message,
                          'details', a.details, 'created_at', a.created_at,
                          'acknowledged_at', a.acknowledged_at,
                          'deliveries', coalesce((select jsonb_agg(jsonb_build_object(
                              'kind', o.kind, 'channel', o.channel, 'step', o.step,
                              'status', o.status, 'sent_at', o.sent_at,
                              'delivery_status', o.delivery_status) order by o.created_at)
                            from private.outbox o where o.alert_id = a.id), '[]'))
                          order by a.created_at)
                        from public.alerts a
                        where a.relative_id = p_relative_id), '[]'),
    'webhook_events', coalesce((select jsonb_agg(jsonb_build_object(
                                  'id', w.id, 'event_type', w.event_type,
                                  'received_at', w.received_at, 'status', w.status,
                                  'payload', w.payload) order by w.received_at)
                                from public.webhook_events w
                                where w.call_session_id in (select s.id from public.call_sessions s
                                                            where s.relative_id = p_relative_id)),
                               '[]'),
    'transcript_reads', coalesce((select jsonb_agg(jsonb_build_object(
                                    'call_session_id', t.call_session_id, 'user_id', t.user_id,
                                    'via', t.via, 'read_at', t.read_at) order by t.read_at, t.id)
                                  from public.transcript_reads t
                                  where t.call_session_id in (select s.id from public.call_sessions s
                                                              where s.relative_id = p_relative_id)),
                                 '[]'));
  return v_doc;
end
$$;

-- The daily cleanup job (callpanion-cleanup) now also enforces retention and removes erased
-- households whose provider deletions are all confirmed. Same body as before otherwise.
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
  perform public.enforce_retention(p_now);
  perform private.finish_erasures(p_now);
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

revoke all on function private.households_privacy_defaults(), private.transcript_reads_immutable()
  from public, anon, authenticated;
revoke all on function public.read_transcript(uuid, timestamptz),
  public.privacy_overview(uuid, timestamptz), public.set_privacy_settings(uuid, jsonb),
  public.export_relative(uuid, timestamptz), public.enforce_retention(timestamptz)
  from public, anon;
grant execute on function public.read_transcript(uuid, timestamptz),
  public.privacy_overview(uuid, timestamptz), public.set_privacy_settings(uuid, jsonb),
  public.export_relative(uuid, timestamptz)
  to authenticated;
revoke all on function public.enforce_retention(timestamptz) from authenticated;
grant execute on function public.enforce_retention(timestamptz) to service_role;
