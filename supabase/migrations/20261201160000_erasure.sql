-- Issue 24, item 2: erasure of a relative and of a household, at ElevenLabs too.
--
-- `public.erase_relative` and `public.erase_household` (household admins) remove every row
-- that names, identifies or quotes the relative, in one transaction: sessions, logs and
-- transcripts, queue snapshots (names, push tokens), cancel notices, devices, schedules,
-- webhook bodies (matched by session, conversation or the ids inside the body), alerts and
-- every outbox row, link use and SMS reply about them. Each of the relative's conversations at
-- ElevenLabs is asked to be deleted through the outbox (kind `provider_deletion`, one row per
-- conversation), so a crash or an outage only delays it; `public.erasures` (readable by the
-- household) counts the confirmations. What stays is pseudonymous: the SHA-256 of each erased
-- conversation id (`private.erased_conversations`), so that a webhook ElevenLabs sends late for
-- it is stored without its body and cannot bring the transcript back.

-- The outbox learns the new kind. One row per conversation: `subject` tells them apart (the
-- other kinds leave it null, so their uniqueness is unchanged; same constraint name, which
-- alerts-sql's functions name in `on conflict on constraint outbox_once`).
alter table private.outbox drop constraint outbox_kind_check;
alter table private.outbox add constraint outbox_kind_check
  check (private.one_of('outbox.kind', kind, '{alert,all_clear,verification,provider_deletion}'));
alter table private.outbox add column subject text;
alter table private.outbox drop constraint outbox_once;
alter table private.outbox add constraint outbox_once
  unique nulls not distinct (kind, alert_id, method_id, step, subject);
create index outbox_erasure_idx on private.outbox ((payload ->> 'erasure_id'))
  where kind = 'provider_deletion';

-- A household being erased stays as a tombstone (no name, its erasing admin only) until
-- ElevenLabs has confirmed every deletion; the daily cleanup then removes it.
alter table public.households add column erased_at timestamptz;

create table public.erasures (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null references public.households (id) on delete cascade,
  scope text not null
    constraint erasures_scope_check check (private.one_of('erasures.scope', scope, '{relative,household}')),
  requested_by uuid references auth.users (id) on delete set null,
  requested_at timestamptz not null default now(),
  -- How many rows of each table went (no ids, no names).
  removed jsonb not null default '{}'::jsonb,
  conversations integer not null default 0,
  provider_confirmed integer not null default 0,
  provider_failed integer not null default 0,
  -- Set when every conversation is confirmed deleted at ElevenLabs (at once when there were none).
  provider_done_at timestamptz,
  updated_at timestamptz not null default now()
);
create index erasures_household_idx on public.erasures (household_id, requested_at desc);
create index erasures_requested_by_idx on public.erasures (requested_by);
create trigger erasures_touch before update on public.erasures
  for each row execute function private.touch_updated_at();
alter table public.erasures enable row level security;
create policy erasures_select on public.erasures for select to authenticated
  using (household_id in (select private.member_household_ids()));
revoke all on public.erasures from public, anon, authenticated;
grant select on public.erasures to authenticated;
grant all on public.erasures to service_role;

create table private.erased_conversations (
  conversation_hash text primary key,
  erased_at timestamptz not null default now()
);

create or replace function private.conversation_hash(p_conversation_id text)
returns text
language sql
immutable
set search_path = ''
as $$
  select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_conversation_id, 'UTF8')), 'hex')
$$;

-- A webhook for an erased conversation keeps only its type and time: no body, no conversation
-- column. Its dedupe key (which names the conversation id) stays as it is, because
-- store_webhook_event finds a resend's first copy by that key; the daily cleanup deletes such
-- rows after a day (ElevenLabs resends within minutes).
create or replace function private.webhook_events_forget_erased()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.conversation_id is not null and exists (
       select 1 from private.erased_conversations e
       where e.conversation_hash = private.conversation_hash(new.conversation_id)) then
    new.payload := jsonb_build_object('type', new.event_type,
                                      'event_timestamp', extract(epoch from new.event_timestamp),
                                      'data', jsonb_build_object('erased', true));
    new.conversation_id := null;
    new.status := 'ignored';
    new.error := 'the conversation was erased';
  end if;
  return new;
end
$$;
create trigger webhook_events_forget_erased before insert on public.webhook_events
  for each row execute function private.webhook_events_forget_erased();

-- The caller's right to erase in a household: a member who is not an admin is refused (42501);
-- a household that is not theirs is "not found" (P0002), as for every other RPC.
create or replace function private.require_erasing_admin(p_field text, p_household_id uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_household_id is null
     or p_household_id not in (select private.member_household_ids()) then
    raise exception 'invalid %: not found', p_field using errcode = 'P0002';
  end if;
  if p_household_id not in (select private.admin_household_ids()) then
    raise exception 'invalid %: only an admin of the household may erase or export its data', p_field
      using errcode = '42501';
  end if;
end
$$;

-- Removes every row about one relative and queues the deletion of its conversations at
-- ElevenLabs under erasure `p_erasure_id`; returns the counts of what went (by table).
create or replace function private.erase_relative_rows(p_relative_id uuid, p_erasure_id uuid,
                                                       p_now timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_household uuid;
  v_sessions uuid[];
  v_devices uuid[];
  v_convs text[];
  v_alerts uuid[];
  v_sids text[];
  v_needles text[];
  v_n integer;
  v_removed jsonb := '{}'::jsonb;
  v_queued integer;
begin
  select r.household_id into v_household from public.relatives r where r.id = p_relative_id for update;
  v_sessions := array(select s.id from public.call_sessions s where s.relative_id = p_relative_id);
  v_devices := array(select d.id from public.device_pairs d where d.relative_id = p_relative_id);
  v_convs := array(
    select distinct c from (
      select s.conversation_id as c from public.call_sessions s where s.relative_id = p_relative_id
      union all
      select l.conversation_id from public.call_logs l where l.relative_id = p_relative_id
      union all
      select w.conversation_id from public.webhook_events w where w.call_session_id = any (v_sessions)
    ) x where c is not null);
  v_alerts := array(
    select a.id from public.alerts a
    where a.household_id = v_household
      and (a.relative_id = p_relative_id or a.call_session_id = any (v_sessions)
           or a.device_id = any (v_devices)));
  v_sids := array(select o.provider_message_id from private.outbox o
                  where o.alert_id = any (v_alerts) and o.provider_message_id is not null);
  -- The ids a webhook body may carry (dynamic variables echo the relative and session ids).
  v_needles := array[p_relative_id::text] || v_sessions::text[] || v_devices::text[];

  -- ElevenLabs first: the rows that ask for the deletions, and the tombstones.
  insert into private.outbox (kind, household_id, subject, payload, send_at)
  select 'provider_deletion', v_household, 'conversation:' || private.conversation_hash(c),
         jsonb_build_object('erasure_id', p_erasure_id, 'conversation_id', c), p_now
  from unnest(v_convs) c
  on conflict on constraint outbox_once do nothing;
  get diagnostics v_queued = row_count;
  insert into private.erased_conversations (conversation_hash, erased_at)
  select private.conversation_hash(c), p_now from unnest(v_convs) c
  on conflict do nothing;
  perform private.notify_outbox(v_queued, p_now);

  delete from public.webhook_events w
   where w.call_session_id = any (v_sessions) or w.conversation_id = any (v_convs)
      or ((w.household_id = v_household or w.household_id is null)
          and exists (select 1 from unnest(v_needles) n where strpos(w.payload::text, n) > 0));
  get diagnostics v_n = row_count;
  v_removed := v_removed || jsonb_build_object('webhook_events', v_n);

  delete from private.sms_replies r where r.result ->> 'alert_id' = any (v_alerts::text[]);
  get diagnostics v_n = row_count;
  v_removed := v_removed || jsonb_build_object('sms_replies', v_n);
  delete from private.sms_status_pending p where p.message_sid = any (v_sids);

  -- Their outbox rows, escalations and link uses go with the alerts (foreign keys cascade).
  select count(*) into v_n from private.outbox o where o.alert_id = any (v_alerts);
  v_removed := v_removed || jsonb_build_object('outbox', v_n);
  delete from public.alerts a where a.id = any (v_alerts);
  get diagnostics v_n = row_count;
  v_removed := v_removed || jsonb_build_object('alerts', v_n);

  select v_removed || jsonb_build_object(
           'call_sessions', cardinality(v_sessions),
           'call_logs', (select count(*) from public.call_logs l where l.relative_id = p_relative_id),
           'notification_queue', (select count(*) from public.notification_queue q
                                  where q.call_session_id = any (v_sessions)),
           'cancel_notices', (select count(*) from private.cancel_notices c
                              where c.call_session_id = any (v_sessions) or c.device_id = any (v_devices)),
           'device_pairs', cardinality(v_devices),
           'schedules', (select count(*) from public.schedules s where s.relative_id = p_relative_id),
           'conversations', cardinality(v_convs),
           'relatives', 1)
    into v_removed;
  delete from private.cancel_notices c
   where c.call_session_id = any (v_sessions) or c.device_id = any (v_devices);
  -- Sessions (with their logs and queue rows), devices and schedules cascade from the relative.
  delete from public.relatives r where r.id = p_relative_id;
  return v_removed;
end
$$;

-- Sums two jsonb objects of counts.
create or replace function private.add_counts(p_a jsonb, p_b jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select coalesce(jsonb_object_agg(k, v), '{}'::jsonb) from (
    select k, sum(v::bigint) as v
    from (select key as k, value as v from jsonb_each_text(p_a)
          union all select key, value from jsonb_each_text(p_b)) x
    group by k) y
$$;

create or replace function private.new_erasure(p_household_id uuid, p_scope text,
                                               p_now timestamptz)
returns uuid
language sql
security definer
set search_path = ''
as $$
  insert into public.erasures (household_id, scope, requested_by, requested_at)
  values (p_household_id, p_scope, (select auth.uid()), p_now)
  returning id
$$;

-- Counts the provider's answers into the erasure; done when none is pending.
create or replace function private.erasure_progress(p_erasure_id uuid, p_now timestamptz)
returns void
language sql
security definer
set search_path = ''
as $$
  update public.erasures e
     set conversations = c.total, provider_confirmed = c.confirmed, provider_failed = c.failed,
         provider_done_at = case when c.total = c.confirmed then coalesce(e.provider_done_at, p_now) end
    from (select count(*)::integer as total,
                 count(*) filter (where o.status = 'sent')::integer as confirmed,
                 count(*) filter (where o.status in ('failed', 'cancelled', 'expired'))::integer as failed
            from private.outbox o
           where o.kind = 'provider_deletion' and o.payload ->> 'erasure_id' = p_erasure_id::text) c
   where e.id = p_erasure_id
$$;

create or replace function public.erase_relative(p_relative_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_household uuid;
  v_erasure uuid;
  v_removed jsonb;
begin
  select r.household_id into v_household from public.relatives r where r.id = p_relative_id;
  perform private.require_erasing_admin('erase_relative.p_relative_id', v_household);
  v_erasure := private.new_erasure(v_household, 'relative', p_now);
  v_removed := private.erase_relative_rows(p_relative_id, v_erasure, p_now);
  update public.erasures e set removed = v_removed where e.id = v_erasure;
  perform private.erasure_progress(v_erasure, p_now);
  return (select to_jsonb(e) from public.erasures e where e.id = v_erasure);
end
$$;

-- The household: every relative as above, then the members' contact methods and preferences,
-- the household's alerts, outbox, webhooks and settings, and every other member. The household
-- row stays, nameless, with its erasing admin, until ElevenLabs confirms (see finish_erasures).
create or replace function public.erase_household(p_household_id uuid, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_erasure uuid;
  v_removed jsonb := '{}'::jsonb;
  v_relative uuid;
  v_sms text[];
  v_sids text[];
  v_n integer;
begin
  perform private.require_erasing_admin('erase_household.p_household_id', p_household_id);
  perform 1 from public.households h where h.id = p_household_id for update;
  v_erasure := private.new_erasure(p_household_id, 'household', p_now);
  for v_relative in select r.id from public.relatives r where r.household_id = p_household_id loop
    v_removed := private.add_counts(v_removed,
                   private.erase_relative_rows(v_relative, v_erasure, p_now));
  end loop;

  v_sms := array(select m.address from public.contact_methods m
                 where m.household_id = p_household_id and m.channel = 'sms');
  v_sids := array(select o.provider_message_id from private.outbox o
                  where o.household_id = p_household_id and o.provider_message_id is not null);
  delete from private.sms_replies r
   where r.from_number = any (v_sms)
     and not exists (select 1 from public.contact_methods m
                     where m.address = r.from_number and m.household_id <> p_household_id);
  delete from private.sms_status_pending p where p.message_sid = any (v_sids);
  delete from private.outbox o where o.household_id = p_household_id and o.kind <> 'provider_deletion';
  get diagnostics v_n = row_count;
  v_removed := private.add_counts(v_removed, jsonb_build_object('outbox', v_n));
  delete from public.alerts a where a.household_id = p_household_id;
  get diagnostics v_n = row_count;
  v_removed := private.add_counts(v_removed, jsonb_build_object('alerts', v_n));
  delete from public.webhook_events w where w.household_id = p_household_id;
  get diagnostics v_n = row_count;
  v_removed := private.add_counts(v_removed, jsonb_build_object('webhook_events', v_n));
  delete from public.contact_methods m where m.household_id = p_household_id;
  get diagnostics v_n = row_count;
  v_removed := private.add_counts(v_removed, jsonb_build_object('contact_methods', v_n));
  delete from public.member_alert_settings s where s.household_id = p_household_id;
  delete from public.escalation_contacts c where c.household_id = p_household_id;
  delete from public.escalation_policies p where p.household_id = p_household_id;
  delete from private.alert_escalations e where e.household_id = p_household_id;
  delete from private.cancel_notices c where c.household_id = p_household_id;
  delete from public.household_members m
   where m.household_id = p_household_id and m.user_id is distinct from (select auth.uid());
  get diagnostics v_n = row_count;
  v_removed := private.add_counts(v_removed, jsonb_build_object('household_members', v_n));
  update public.households h
     set name = 'Erased household', erased_at = p_now, created_by = null
   where h.id = p_household_id;
  update public.erasures e set removed = v_removed where e.id = v_erasure;
  perform private.erasure_progress(v_erasure, p_now);
  return (select to_jsonb(e) from public.erasures e where e.id = v_erasure)
         || jsonb_build_object('household_removed', private.finish_erasures(p_now) > 0);
end
$$;

-- Erased households whose every provider deletion is confirmed are removed for good (with
-- their erasure rows and outbox rows). Called by the daily cleanup and by erase_household.
create or replace function private.finish_erasures(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_n integer;
begin
  delete from public.households h
   where h.erased_at is not null and h.erased_at <= p_now
     and not exists (select 1 from private.outbox o
                     where o.household_id = h.id and o.kind = 'provider_deletion'
                       and o.status <> 'sent');
  get diagnostics v_n = row_count;
  return v_n;
end
$$;

-- A confirmed deletion forgets the conversation id (the hash in erased_conversations stays).
create or replace function private.outbox_provider_deletion_sent()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status = 'sent' then
    new.payload := new.payload - 'conversation_id';
  end if;
  return new;
end
$$;
create trigger outbox_provider_deletion_sent before update of status on private.outbox
  for each row when (new.kind = 'provider_deletion' and new.status is distinct from old.status)
  execute function private.outbox_provider_deletion_sent();

create or replace function private.outbox_provider_deletion_progress()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.erasure_progress((new.payload ->> 'erasure_id')::uuid, now());
  return null;
end
$$;
create trigger outbox_provider_deletion_progress after update of status on private.outbox
  for each row when (new.kind = 'provider_deletion' and new.status is distinct from old.status)
  execute function private.outbox_provider_deletion_progress();

revoke all on function private.conversation_hash(text), private.webhook_events_forget_erased(),
  private.require_erasing_admin(text, uuid), private.erase_relative_rows(uuid, uuid, timestamptz),
  private.add_counts(jsonb, jsonb), private.new_erasure(uuid, text, timestamptz),
  private.erasure_progress(uuid, timestamptz), private.finish_erasures(timestamptz),
  private.outbox_provider_deletion_sent(), private.outbox_provider_deletion_progress()
  from public, anon, authenticated;
grant execute on function private.finish_erasures(timestamptz) to service_role;
revoke all on function public.erase_relative(uuid, timestamptz), public.erase_household(uuid, timestamptz)
  from public, anon;
grant execute on function public.erase_relative(uuid, timestamptz), public.erase_household(uuid, timestamptz)
  to authenticated;
