-- device_pairs: one paired (or pairing) phone/tablet of a relative.
-- Lifecycle: pending (a pairing code exists) -> active (claimed by the app) -> revoked.
-- Each push token keeps its own validity: a token is valid while *_invalidated_at is null.

create table public.device_pairs (
  id uuid primary key default gen_random_uuid(),
  household_id uuid not null,
  relative_id uuid not null,
  status text not null default 'pending'
    constraint device_pairs_status_check
    check (private.one_of('device_pairs.status', status, '{pending,active,revoked}')),
  platform text
    constraint device_pairs_platform_check
    check (private.one_of('device_pairs.platform', platform, '{ios,android}')),
  label text
    constraint device_pairs_label_check check (private.is_text('device_pairs.label', label, 100)),
  app_version text
    constraint device_pairs_app_version_check
    check (private.is_text('device_pairs.app_version', app_version, 50)),

  -- Android: FCM registration token (data messages). iOS may also have one (fallback).
  fcm_token text
    constraint device_pairs_fcm_token_check
    check (private.matches('device_pairs.fcm_token', fcm_token, '^[A-Za-z0-9_:\-]+$',
                           'is not an FCM registration token (only A-Z a-z 0-9 _ : - allowed)')
           and private.between_('length of device_pairs.fcm_token', length(fcm_token), 32, 4096)),
  fcm_token_invalidated_at timestamptz,
  fcm_token_invalid_reason text,
  -- iOS: PushKit VoIP token (incoming calls) and the regular APNs token (alerts).
  voip_token text
    constraint device_pairs_voip_token_check
    check (private.matches('device_pairs.voip_token', voip_token, '^[0-9a-f]{64}$',
                           'is not an APNs device token (64 hexadecimal characters)')),
  voip_token_invalidated_at timestamptz,
  voip_token_invalid_reason text,
  apns_token text
    constraint device_pairs_apns_token_check
    check (private.matches('device_pairs.apns_token', apns_token, '^[0-9a-f]{64}$',
                           'is not an APNs device token (64 hexadecimal characters)')),
  apns_token_invalidated_at timestamptz,
  apns_token_invalid_reason text,

  -- Secrets: only hashes are stored, and `authenticated` may never read these columns.
  pairing_code_hash text,
  pairing_code_expires_at timestamptz,
  pairing_failed_attempts integer not null default 0
    constraint device_pairs_pairing_failed_attempts_check
    check (private.between_('device_pairs.pairing_failed_attempts', pairing_failed_attempts, 0, 1000)),
  secret_hash text,

  paired_at timestamptz,
  last_seen_at timestamptz,
  notification_permission boolean,
  full_screen_intent_permission boolean,
  revoked_at timestamptz,
  revoked_reason text,
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  -- Deleting a relative deletes their devices; the pair must stay inside one household.
  foreign key (relative_id, household_id)
    references public.relatives (id, household_id) on delete cascade,
  constraint device_pairs_invalid_reason_check check (
    (fcm_token_invalidated_at is null) = (fcm_token_invalid_reason is null)
    and (voip_token_invalidated_at is null) = (voip_token_invalid_reason is null)
    and (apns_token_invalidated_at is null) = (apns_token_invalid_reason is null)),
  constraint device_pairs_active_check check (
    status <> 'active' or (platform is not null and secret_hash is not null and paired_at is not null)),
  constraint device_pairs_pending_check check (
    status <> 'pending' or (pairing_code_hash is not null and pairing_code_expires_at is not null)),
  constraint device_pairs_revoked_check check ((status = 'revoked') = (revoked_at is not null))
);

-- At most one active device and one open pairing code per relative.
create unique index device_pairs_one_active_idx on public.device_pairs (relative_id)
  where status = 'active';
create unique index device_pairs_one_pending_idx on public.device_pairs (relative_id)
  where status = 'pending';
create index device_pairs_household_idx on public.device_pairs (household_id);
-- Deleting a relative cascades here by relative: never by scanning the whole household.
create index device_pairs_relative_idx on public.device_pairs (relative_id);

-- APNs tokens arrive in either case from apps; store them in the canonical lowercase form.
create or replace function private.device_pairs_normalise()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.voip_token := lower(new.voip_token);
  new.apns_token := lower(new.apns_token);
  return new;
end
$$;

create trigger device_pairs_normalise before insert or update on public.device_pairs
  for each row execute function private.device_pairs_normalise();
create trigger device_pairs_touch before update on public.device_pairs
  for each row execute function private.touch_updated_at();

-- RLS -------------------------------------------------------------------------------------
alter table public.device_pairs enable row level security;

-- Members see their household's devices (non-secret columns only, by the grants below);
-- admins rename and delete them. Pairing and revocation go through SQL functions.
create policy device_pairs_select on public.device_pairs for select to authenticated
  using (household_id in (select private.member_household_ids()));
create policy device_pairs_update on public.device_pairs for update to authenticated
  using (household_id in (select private.admin_household_ids()))
  with check (household_id in (select private.admin_household_ids()));
create policy device_pairs_delete on public.device_pairs for delete to authenticated
  using (household_id in (select private.admin_household_ids()));

revoke all on public.device_pairs from anon, authenticated;
-- Column grants: neither secret hashes nor the push tokens themselves are readable.
grant select (id, household_id, relative_id, status, platform, label, app_version,
              fcm_token_invalidated_at, fcm_token_invalid_reason,
              voip_token_invalidated_at, voip_token_invalid_reason,
              apns_token_invalidated_at, apns_token_invalid_reason,
              pairing_code_expires_at, paired_at, last_seen_at,
              notification_permission, full_screen_intent_permission,
              revoked_at, revoked_reason, created_by, created_at, updated_at)
  on public.device_pairs to authenticated;
grant update (label) on public.device_pairs to authenticated;
grant delete on public.device_pairs to authenticated;

-- What the dashboard lists (`select *` works on it, unlike on the table with column grants).
create view public.devices with (security_invoker = true) as
  select id, household_id, relative_id, status, platform, label, app_version,
         fcm_token_invalidated_at, fcm_token_invalid_reason,
         voip_token_invalidated_at, voip_token_invalid_reason,
         apns_token_invalidated_at, apns_token_invalid_reason,
         pairing_code_expires_at, paired_at, last_seen_at,
         notification_permission, full_screen_intent_permission,
         revoked_at, revoked_reason, created_by, created_at, updated_at
  from public.device_pairs;
revoke all on public.devices from anon, authenticated;
grant select on public.devices to authenticated;

-- RPC: an admin revokes a device; the app's next request with its secret gets 401.
create or replace function public.revoke_device(p_device_id uuid, p_reason text default 'revoked by an admin')
returns void
language plpgsql security definer
set search_path = ''
as $$
begin
  update public.device_pairs d
     set status = 'revoked', revoked_at = now(), revoked_reason = p_reason,
         pairing_code_hash = null
   where d.id = p_device_id
     and d.status <> 'revoked'
     and d.household_id in (select private.admin_household_ids());
  if not found and not exists (
    select 1 from public.device_pairs d
    where d.id = p_device_id and d.household_id in (select private.admin_household_ids())) then
    -- Same answer for "no such device" and "not your household": existence is not leaked.
    raise exception 'device % not found', p_device_id using errcode = 'P0002';
  end if;
end
$$;
revoke all on function public.revoke_device(uuid, text) from public, anon;
grant execute on function public.revoke_device(uuid, text) to authenticated;
