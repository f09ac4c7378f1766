-- Telling the family (issue 21), part 1: the tables. An alert row is not a message: this
-- adds the members' contact methods (verified before use), their preferences (which kinds on
-- which method, quiet hours in their own zone), the household's escalation chain, and one
-- general outbox that the worker drains with the calls' claim / lease / presence / retry
-- machinery. Functions are in 20261201120100_family_alerts_functions.sql; the Python side's
-- contract is README "Telling the family".
--
-- Who may do what:
--   contact_methods        a member reads only their own; writes only through the RPCs
--                          (add / confirm / remove), so an address is used only once verified
--   member_alert_settings  the household reads; each member writes only their own row
--   escalation_policies,   the household reads; admins write
--   escalation_contacts
--   private.*              nobody but the SECURITY DEFINER functions (codes, keys, outbox)

-- Settings ------------------------------------------------------------------------------------

create table private.alert_settings (
  singleton boolean primary key default true
    constraint alert_settings_singleton check (singleton),
  -- How long a link in a message (acknowledge, call her now) works.
  link_ttl interval not null default interval '7 days'
    constraint alert_settings_link_ttl_check
    check (private.between_('alert_settings.link_ttl', link_ttl, interval '10 minutes', interval '30 days')),
  -- A verification code: how long it is valid, how many wrong tries, how many codes an hour.
  code_ttl interval not null default interval '15 minutes'
    constraint alert_settings_code_ttl_check
    check (private.between_('alert_settings.code_ttl', code_ttl, interval '1 minute', interval '1 day')),
  code_attempts integer not null default 5
    constraint alert_settings_code_attempts_check
    check (private.between_('alert_settings.code_attempts', code_attempts, 1, 20)),
  codes_per_hour integer not null default 5
    constraint alert_settings_codes_per_hour_check
    check (private.between_('alert_settings.codes_per_hour', codes_per_hour, 1, 100)),
  -- Codes one member may have sent an hour over all their methods: adding stranger after
  -- stranger must not turn us into a way to message strangers.
  codes_per_member_hour integer not null default 10
    constraint alert_settings_codes_per_member_hour_check
    check (private.between_('alert_settings.codes_per_member_hour', codes_per_member_hour, 1, 1000)),
  -- A message is tried at most this many times, and never after the deadline.
  max_attempts integer not null default 8
    constraint alert_settings_max_attempts_check
    check (private.between_('alert_settings.max_attempts', max_attempts, 1, 100)),
  alert_deadline interval not null default interval '24 hours'
    constraint alert_settings_alert_deadline_check
    check (private.between_('alert_settings.alert_deadline', alert_deadline, interval '1 minute', interval '30 days')),
  -- An SMS reply acknowledges an alert told to that number within this window.
  reply_window interval not null default interval '7 days'
    constraint alert_settings_reply_window_check
    check (private.between_('alert_settings.reply_window', reply_window, interval '1 hour', interval '30 days'))
);
insert into private.alert_settings default values;

-- The server-side key of link tokens and verification-code hashes (as private.pairing_keys).
-- Rotating it (update ... set key = extensions.gen_random_bytes(32)) voids every link sent
-- and every open code.
create table private.alert_link_keys (
  singleton boolean primary key default true
    constraint alert_link_keys_singleton check (singleton),
  key bytea not null default extensions.gen_random_bytes(32)
    constraint alert_link_keys_key_check check (length(key) >= 32),
  created_at timestamptz not null default now()
);
insert into private.alert_link_keys default values;

revoke all on private.alert_settings, private.alert_link_keys
  from public, anon, authenticated, service_role;

-- The alert kinds a preference may name (alerts.kind's allowed values).
create or replace function private.alert_kinds() returns text[]
language sql immutable
set search_path = ''
as $$
  select '{missed_calls,no_device,device_unreachable,invalid_token,provider_config,call_failed,call_expired,concerning_content}'::text[]
$$;

-- CHECK helper: a list of alert kinds (null = every kind), each known, at least one.
create or replace function private.is_alert_kinds(p_field text, p_kinds text[])
returns boolean
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_kinds is null then
    return null;
  end if;
  if cardinality(p_kinds) >= 1 and p_kinds <@ private.alert_kinds()
     and array_position(p_kinds, null) is null then
    return true;
  end if;
  raise exception 'invalid %: "%" must list alert kinds, at least one, from: %', p_field,
    left(p_kinds::text, 300), array_to_string(private.alert_kinds(), ', ')
    using errcode = 'check_violation';
end
$$;

-- Contact methods -------------------------------------------------------------------------

create table public.contact_methods (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null,
  user_id uuid not null,
  channel text not null
    constraint contact_methods_channel_check
    check (private.one_of('contact_methods.channel', channel, '{webpush,email,sms}')),
  -- The email address (lower case), the E.164 phone number, or the push endpoint.
  address text not null,
  -- Web Push only: the browser's keys (PushSubscription.toJSON().keys), base64url.
  push_p256dh text
    constraint contact_methods_push_p256dh_check
    check (private.matches('contact_methods.push_p256dh', push_p256dh, '^[A-Za-z0-9_-]{86,88}=*$',
                           'must be the base64url P-256 public key of the subscription (65 bytes)')),
  push_auth text
    constraint contact_methods_push_auth_check
    check (private.matches('contact_methods.push_auth', push_auth, '^[A-Za-z0-9_-]{21,24}=*$',
                           'must be the base64url 16-byte auth secret of the subscription')),
  label text
    constraint contact_methods_label_check check (private.is_text('contact_methods.label', label, 100)),
  -- Which alert kinds this method carries; null = every kind.
  kinds text[]
    constraint contact_methods_kinds_check check (private.is_alert_kinds('contact_methods.kinds', kinds)),
  -- Email and SMS: set when the member entered back the code sent there. Web Push: at once.
  verified_at timestamptz,
  -- Set when the provider said the address is gone (or the member's number replied STOP).
  disabled_at timestamptz,
  disabled_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- A member who leaves the household takes their methods with them.
  foreign key (household_id, user_id)
    references public.household_members (household_id, user_id) on delete cascade,
  unique (household_id, user_id, channel, address),
  constraint contact_methods_address_check check (
    case channel
      when 'email' then private.matches('contact_methods.address', address,
        '^[^@[:space:]]{1,64}@[^@[:space:]]+\.[^@[:space:]]+$', 'must be an email address')
        and private.between_('contact_methods.address length', length(address), 6, 254)
      when 'sms' then private.matches('contact_methods.address', address, '^\+[1-9][0-9]{6,14}$',
        'must be a phone number in E.164 form, such as +447700900123')
      when 'webpush' then private.matches('contact_methods.address', address, '^https://[^[:space:]]+$',
        'must be the https endpoint of a push subscription')
        and private.between_('contact_methods.address length', length(address), 12, 2000)
      else true end),
  constraint contact_methods_push_keys_check check (
    (channel = 'webpush') = (push_p256dh is not null and push_auth is not null)),
  constraint contact_methods_disabled_check check ((disabled_at is null) = (disabled_reason is null))
);
create index contact_methods_user_idx on public.contact_methods (user_id);
-- SMS replies and status callbacks find the method by number.
create index contact_methods_sms_idx on public.contact_methods (address) where channel = 'sms';
create trigger contact_methods_touch before update on public.contact_methods
  for each row execute function private.touch_updated_at();

-- One row per code sent. Only the HMAC of the code is stored (key: private.alert_link_keys,
-- salt: the method id), so a reader of this table cannot learn or try codes.
create table private.contact_verifications (
  id uuid primary key default gen_random_uuid(),
  method_id uuid not null references public.contact_methods (id) on delete cascade,
  code_hash text not null,
  expires_at timestamptz not null,
  wrong integer not null default 0,
  used_at timestamptz,
  created_at timestamptz not null default now()
);
create index contact_verifications_method_idx on private.contact_verifications (method_id, created_at desc);
revoke all on private.contact_verifications from public, anon, authenticated, service_role;

-- Preferences -----------------------------------------------------------------------------

create table public.member_alert_settings (
  household_id uuid not null,
  user_id uuid not null,
  -- The member's own zone: quiet hours and the time in messages. Null: the relative's zone.
  timezone text
    constraint member_alert_settings_timezone_check
    check (private.is_timezone('member_alert_settings.timezone', timezone)),
  -- Quiet hours [start, end) in that zone; may wrap midnight (22:00-07:00). Both or neither.
  quiet_start time,
  quiet_end time,
  -- Critical kinds (missed_calls, concerning_content) ignore quiet hours unless this is set.
  quiet_hours_hold_critical boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (household_id, user_id),
  foreign key (household_id, user_id)
    references public.household_members (household_id, user_id) on delete cascade,
  constraint member_alert_settings_quiet_check check (
    (quiet_start is null) = (quiet_end is null)
    and (quiet_start is null or quiet_start <> quiet_end
         or private.reject_value('member_alert_settings.quiet_end', quiet_end::text,
                                 'must differ from quiet_start')))
);
-- A member leaving (the cascade) looks rows up by user.
create index member_alert_settings_user_idx on public.member_alert_settings (user_id);
create trigger member_alert_settings_touch before update on public.member_alert_settings
  for each row execute function private.touch_updated_at();

-- Escalation ------------------------------------------------------------------------------

-- Without a row: wait 10 minutes, no repeat, escalate the critical kinds.
create table public.escalation_policies (
  household_id uuid primary key references public.households (id) on delete cascade,
  -- Between one step and the next.
  wait interval not null default interval '10 minutes'
    constraint escalation_policies_wait_check
    check (private.between_('escalation_policies.wait', wait, interval '5 seconds', interval '24 hours')),
  -- How many times the whole chain starts again from the first step after the last one.
  repeats smallint not null default 0
    constraint escalation_policies_repeats_check
    check (private.between_('escalation_policies.repeats', repeats, 0::smallint, 10::smallint)),
  -- Kinds that go down the chain; every other kind tells the first step only.
  escalate_kinds text[] not null default '{missed_calls,concerning_content}'
    constraint escalation_policies_escalate_kinds_check
    check (private.is_alert_kinds('escalation_policies.escalate_kinds', escalate_kinds)),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger escalation_policies_touch before update on public.escalation_policies
  for each row execute function private.touch_updated_at();

-- The ordered contacts: step 1 first, several members may share a step. Without any row the
-- chain is: step 1 the admins, step 2 the other members.
create table public.escalation_contacts (
  household_id uuid not null,
  user_id uuid not null,
  step smallint not null
    constraint escalation_contacts_step_check
    check (private.between_('escalation_contacts.step', step, 1::smallint, 20::smallint)),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (household_id, user_id),
  foreign key (household_id, user_id)
    references public.household_members (household_id, user_id) on delete cascade
);
create index escalation_contacts_user_idx on public.escalation_contacts (user_id);
create trigger escalation_contacts_touch before update on public.escalation_contacts
  for each row execute function private.touch_updated_at();

-- The chain of one alert, frozen when it is raised: later edits of the policy do not change
-- an alert already under way.
create table private.alert_escalations (
  alert_id uuid primary key references public.alerts (id) on delete cascade,
  household_id uuid not null references public.households (id) on delete cascade,
  -- [[user ids of step 1], [step 2], ...] as they were when the alert was raised.
  chain jsonb not null,
  wait interval not null,
  repeats smallint not null,
  -- Steps in all, repeats included (1 for a kind that does not escalate).
  steps_total integer not null,
  -- The next step to reach and when; null when no step is left.
  next_step integer not null default 2,
  next_step_at timestamptz,
  stopped_at timestamptz,
  stop_reason text
    constraint alert_escalations_stop_reason_check
    check (private.one_of('alert_escalations.stop_reason', stop_reason, '{acknowledged,answered}')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index alert_escalations_due_idx on private.alert_escalations (next_step_at)
  where next_step_at is not null and stopped_at is null;
create index alert_escalations_household_idx on private.alert_escalations (household_id);
create trigger alert_escalations_touch before update on private.alert_escalations
  for each row execute function private.touch_updated_at();

-- The outbox ---------------------------------------------------------------------------------

-- Every side effect that must survive a crash: a message to a member (alert, all clear,
-- verification code), and later others (a deletion at a provider: channel null). Unique per
-- (kind, alert, method, step), so nothing is told twice.
create table private.outbox (
  id uuid primary key default gen_random_uuid(),
  kind text not null
    constraint outbox_kind_check
    check (private.one_of('outbox.kind', kind, '{alert,all_clear,verification}')),
  household_id uuid not null references public.households (id) on delete cascade,
  alert_id uuid references public.alerts (id) on delete cascade,
  user_id uuid,
  -- The method it goes to (removed with it).
  method_id uuid references public.contact_methods (id) on delete cascade,
  channel text
    constraint outbox_channel_check
    check (private.one_of('outbox.channel', channel, '{webpush,email,sms}')),
  -- The escalation step (1-based); 0 for an all clear; the code's number for a verification.
  step smallint not null default 0,
  -- What the message says (see README); a verification code is removed once recorded.
  payload jsonb not null default '{}'::jsonb,
  status text not null default 'queued'
    constraint outbox_status_check
    check (private.one_of('outbox.status', status, '{queued,claimed,sent,failed,cancelled,expired}')),
  -- When it may go (quiet hours move it), and when it no longer should.
  send_at timestamptz not null default now(),
  deadline_at timestamptz,
  next_attempt_at timestamptz,
  attempts integer not null default 0,
  locked_by text,
  locked_until timestamptz,
  -- As notification_queue.presence_claimed_at: claimed by a worker holding its presence lock.
  presence_claimed_at timestamptz,
  provider_message_id text,
  -- What the provider said later (Twilio status callbacks).
  delivery_status text,
  delivery_error text,
  delivery_updated_at timestamptz,
  last_error text,
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint outbox_once unique nulls not distinct (kind, alert_id, method_id, step),
  constraint outbox_lease_check check (
    (status = 'claimed') = (locked_by is not null and locked_until is not null)),
  constraint outbox_deadline_check check (deadline_at is null or deadline_at >= send_at)
);
create index outbox_ready_idx on private.outbox ((coalesce(next_attempt_at, send_at)))
  where status = 'queued';
create index outbox_lease_idx on private.outbox (locked_until) where status = 'claimed';
create index outbox_alert_idx on private.outbox (alert_id);
create index outbox_method_idx on private.outbox (method_id);
create index outbox_household_idx on private.outbox (household_id, created_at desc);
create index outbox_message_id_idx on private.outbox (provider_message_id)
  where provider_message_id is not null;
create trigger outbox_touch before update on private.outbox
  for each row execute function private.touch_updated_at();

-- Links used once: the outbox row and the action ('a' acknowledge, 'c' call now).
create table private.alert_link_uses (
  outbox_id uuid not null references private.outbox (id) on delete cascade,
  action text not null
    constraint alert_link_uses_action_check check (private.one_of('alert_link_uses.action', action, '{a,c}')),
  used_at timestamptz not null default now(),
  result jsonb not null default '{}'::jsonb,
  primary key (outbox_id, action)
);

-- Inbound SMS replies by Twilio MessageSid: a repeated webhook gets the same answer.
create table private.sms_replies (
  message_sid text primary key,
  from_number text not null,
  result jsonb not null,
  received_at timestamptz not null default now()
);

-- Twilio status callbacks for a sid not recorded yet (they can overtake the worker's record).
create table private.sms_status_pending (
  message_sid text primary key,
  status text not null,
  error_code text,
  received_at timestamptz not null
);
create index sms_status_pending_received_idx on private.sms_status_pending (received_at);

revoke all on private.alert_escalations, private.outbox, private.alert_link_uses,
  private.sms_replies, private.sms_status_pending from public, anon, authenticated, service_role;

-- RLS -------------------------------------------------------------------------------------
alter table public.contact_methods enable row level security;
alter table public.member_alert_settings enable row level security;
alter table public.escalation_policies enable row level security;
alter table public.escalation_contacts enable row level security;

-- contact_methods: a member reads their own methods only (another member's addresses are
-- theirs; the household sees masked ones through alert_deliveries). No write policy: the RPCs
-- write, so an address cannot skip verification.
create policy contact_methods_select on public.contact_methods for select to authenticated
  using (user_id = (select auth.uid()) and household_id in (select private.member_household_ids()));

-- member_alert_settings: the household reads (who is quiet when); a member writes their own.
create policy member_alert_settings_select on public.member_alert_settings for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy member_alert_settings_insert on public.member_alert_settings for insert to authenticated
  with check (user_id = (select auth.uid()) and household_id in (select private.member_household_ids()));
create policy member_alert_settings_update on public.member_alert_settings for update to authenticated
  using (user_id = (select auth.uid()) and household_id in (select private.member_household_ids()))
  with check (user_id = (select auth.uid()) and household_id in (select private.member_household_ids()));
create policy member_alert_settings_delete on public.member_alert_settings for delete to authenticated
  using (user_id = (select auth.uid()) and household_id in (select private.member_household_ids()));

-- escalation_policies / escalation_contacts: the household reads; admins manage.
create policy escalation_policies_select on public.escalation_policies for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy escalation_policies_insert on public.escalation_policies for insert to authenticated
  with check (household_id in (select private.admin_household_ids()));
create policy escalation_policies_update on public.escalation_policies for update to authenticated
  using (household_id in (select private.admin_household_ids()))
  with check (household_id in (select private.admin_household_ids()));
create policy escalation_policies_delete on public.escalation_policies for delete to authenticated
  using (household_id in (select private.admin_household_ids()));
create policy escalation_contacts_select on public.escalation_contacts for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy escalation_contacts_insert on public.escalation_contacts for insert to authenticated
  with check (household_id in (select private.admin_household_ids()));
create policy escalation_contacts_update on public.escalation_contacts for update to authenticated
  using (household_id in (select private.admin_household_ids()))
  with check (household_id in (select private.admin_household_ids()));
create policy escalation_contacts_delete on public.escalation_contacts for delete to authenticated
  using (household_id in (select private.admin_household_ids()));

revoke all on public.contact_methods, public.member_alert_settings, public.escalation_policies,
  public.escalation_contacts from anon, authenticated;
grant select on public.contact_methods to authenticated;
grant select, insert, delete on public.member_alert_settings, public.escalation_policies,
  public.escalation_contacts to authenticated;
grant update (timezone, quiet_start, quiet_end, quiet_hours_hold_critical)
  on public.member_alert_settings to authenticated;
grant update (wait, repeats, escalate_kinds) on public.escalation_policies to authenticated;
grant update (step) on public.escalation_contacts to authenticated;
