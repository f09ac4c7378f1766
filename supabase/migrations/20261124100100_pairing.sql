-- Device pairing and the device's own routes (issue 6).
--
-- An admin creates a short-lived pairing code for a relative (dashboard RPC); the relative's
-- app claims it through the HTTP API (service_role), which stores the hash of a random device
-- secret. Every later device request is authenticated by the API against that hash, then
-- runs one of the functions below, which re-check that the device is still active.
--
-- Errors the API maps to HTTP statuses: P0002 -> 404, CP401 -> 401, CP409 -> 409,
-- CP410 -> 410, CP422 and check_violation -> 422. Messages name the field and the reason.

-- How long a pairing code lives and how many wrong codes it survives.
create or replace function private.pairing_code_lifetime() returns interval
language sql immutable as $$ select interval '10 minutes' $$;
create or replace function private.pairing_max_failures() returns integer
language sql immutable as $$ select 5 $$;

-- Codes are stored hashed. Six digits are only a million values, so the hash protects a code
-- from a glance at the table rather than from a determined reader of it; what protects it is
-- its ten-minute life and the lock after five wrong attempts.
create or replace function private.pairing_code_hash(p_code text) returns text
language sql immutable
set search_path = ''
as $$ select encode(pg_catalog.sha256(convert_to('callpanion-pairing:' || p_code, 'UTF8')), 'hex') $$;

-- The claim looks a code up by its hash among the open codes: unique there, so a code names
-- one relative. (Expired pending rows keep their hash until replaced, to answer "expired".)
create unique index device_pairs_pending_code_idx on public.device_pairs (pairing_code_hash)
  where status = 'pending';

-- The dashboard may see how many wrong codes a pending pairing has taken (locked at 5).
grant select (pairing_failed_attempts) on public.device_pairs to authenticated;
create or replace view public.devices with (security_invoker = true) as
  select id, household_id, relative_id, status, platform, label, app_version,
         fcm_token_invalidated_at, fcm_token_invalid_reason,
         voip_token_invalidated_at, voip_token_invalid_reason,
         apns_token_invalidated_at, apns_token_invalid_reason,
         pairing_code_expires_at, paired_at, last_seen_at,
         notification_permission, full_screen_intent_permission,
         revoked_at, revoked_reason, created_by, created_at, updated_at,
         pairing_failed_attempts
  from public.device_pairs;

-- RPC (dashboard): an admin of the relative's household creates a pairing code. Six digits
-- from the server's CSPRNG (gen_random_uuid() draws from pg_strong_random), valid ten minutes,
-- replacing any earlier unused code of the relative. The code is returned once, never stored.
create or replace function public.create_pairing_code(p_relative_id uuid)
returns table (device_id uuid, code text, expires_at timestamptz)
language plpgsql security definer
set search_path = ''
as $$
declare
  v_relative public.relatives;
  v_code text;
  v_hash text;
  v_expires timestamptz := now() + private.pairing_code_lifetime();
  v_device uuid;
begin
  select r.* into v_relative from public.relatives r
   where r.id = p_relative_id
     and r.household_id in (select private.admin_household_ids())
   for update of r;  -- two admins pressing at once: one code, not a unique violation
  if v_relative.id is null then
    -- Same answer for "no such relative" and "not an admin of their household".
    raise exception 'relative % not found', p_relative_id using errcode = 'P0002';
  end if;
  for i in 1 .. 20 loop
    -- 48 random bits reduced to six digits (the modulo bias is below one in 10^8).
    v_code := lpad((('x' || left(replace(gen_random_uuid()::text, '-', ''), 12))::bit(48)::bigint
                    % 1000000)::text, 6, '0');
    v_hash := private.pairing_code_hash(v_code);
    -- An expired, unclaimed code holding the same digits is dead: make room for the new one.
    delete from public.device_pairs d
     where d.status = 'pending' and d.pairing_code_hash = v_hash
       and d.pairing_code_expires_at <= now() and d.relative_id <> p_relative_id;
    exit when not exists (select 1 from public.device_pairs d
                          where d.status = 'pending' and d.pairing_code_hash = v_hash
                            and d.relative_id <> p_relative_id);
    v_code := null;
  end loop;
  if v_code is null then
    raise exception 'could not find a free pairing code; try again' using errcode = 'P0001';
  end if;
  update public.device_pairs d
     set pairing_code_hash = v_hash, pairing_code_expires_at = v_expires,
         pairing_failed_attempts = 0, created_by = (select auth.uid())
   where d.relative_id = p_relative_id and d.status = 'pending'
  returning d.id into v_device;
  if v_device is null then
    insert into public.device_pairs (household_id, relative_id, status, pairing_code_hash,
                                     pairing_code_expires_at, created_by)
    values (v_relative.household_id, p_relative_id, 'pending', v_hash, v_expires,
            (select auth.uid()))
    returning id into v_device;
  end if;
  return query select v_device, v_code, v_expires;
end
$$;
revoke all on function public.create_pairing_code(uuid) from public, anon;
grant execute on function public.create_pairing_code(uuid) to authenticated;

-- API: the app claims a code. Returns {"outcome": "paired", "device_id", "relative": {...},
-- "replaced_device_id"} or {"outcome": "invalid" | "expired" | "locked"}; refusals are
-- returned, not raised, so that the wrong-attempt count they add is committed.
--
-- A wrong code does not say which code it was aimed at, and it could have been any open one:
-- it counts against every code open at that moment. Each code is locked after five wrong
-- attempts made while it was open, so a guesser's chance stays below 5 in a million per code.
-- The price: wrong codes from anyone count against everyone's open codes (the API's
-- per-address rate limit slows that down; a locked code is replaced by creating a new one).
--
-- Pairing revokes the relative's earlier active device: a relative has one paired device.
create or replace function public.claim_pairing_code(
  p_code text, p_secret_hash text, p_platform text, p_app_version text, p_label text,
  p_fcm_token text default null, p_voip_token text default null, p_apns_token text default null)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_pending public.device_pairs;
  v_replaced uuid;
  v_relative public.relatives;
  v_household_name text;
begin
  if p_code is null or p_code !~ '^[0-9]{6}$' then
    raise exception 'invalid code: must be exactly 6 digits' using errcode = 'CP422';
  end if;
  if p_secret_hash is null or p_secret_hash !~ '^[0-9a-f]{64}$' then
    raise exception 'invalid secret_hash: must be 64 lowercase hexadecimal characters'
      using errcode = 'CP422';
  end if;
  select d.* into v_pending from public.device_pairs d
   where d.status = 'pending' and d.pairing_code_hash = private.pairing_code_hash(p_code)
   for update of d;
  if v_pending.id is null then
    update public.device_pairs d
       set pairing_failed_attempts = d.pairing_failed_attempts + 1
     where d.status = 'pending' and d.pairing_code_expires_at > now()
       and d.pairing_failed_attempts < private.pairing_max_failures();
    return jsonb_build_object('outcome', 'invalid');
  end if;
  if v_pending.pairing_code_expires_at <= now() then
    return jsonb_build_object('outcome', 'expired');
  end if;
  if v_pending.pairing_failed_attempts >= private.pairing_max_failures() then
    return jsonb_build_object('outcome', 'locked');
  end if;

  update public.device_pairs d
     set status = 'revoked', revoked_at = now(),
         revoked_reason = 'replaced by a newly paired device'
   where d.relative_id = v_pending.relative_id and d.status = 'active'
  returning d.id into v_replaced;

  update public.device_pairs d
     set status = 'active', platform = p_platform, app_version = p_app_version, label = p_label,
         fcm_token = p_fcm_token, voip_token = p_voip_token, apns_token = p_apns_token,
         fcm_token_invalidated_at = null, fcm_token_invalid_reason = null,
         voip_token_invalidated_at = null, voip_token_invalid_reason = null,
         apns_token_invalidated_at = null, apns_token_invalid_reason = null,
         secret_hash = p_secret_hash, paired_at = now(), last_seen_at = now(),
         pairing_code_hash = null, pairing_code_expires_at = null, pairing_failed_attempts = 0
   where d.id = v_pending.id;

  select r.* into v_relative from public.relatives r where r.id = v_pending.relative_id;
  select h.name into v_household_name from public.households h where h.id = v_relative.household_id;
  return jsonb_build_object(
    'outcome', 'paired',
    'device_id', v_pending.id,
    'replaced_device_id', v_replaced,
    'relative', jsonb_build_object(
      'id', v_relative.id, 'display_name', v_relative.display_name,
      'timezone', v_relative.timezone, 'household_name', v_household_name));
end
$$;

-- API: what the device's credentials are checked against. The API compares the hash of the
-- presented secret with secret_hash in constant time; no row means no such device.
create or replace function public.device_credentials(p_device_id uuid)
returns table (status text, secret_hash text)
language sql stable security definer
set search_path = ''
as $$
  select d.status, d.secret_hash from public.device_pairs d where d.id = p_device_id
$$;

-- The device row a device route acts on, locked; refused unless the device is still active
-- (a revocation may land between the API's credential check and this call).
create or replace function private.active_device(p_device_id uuid)
returns public.device_pairs
language plpgsql
set search_path = ''
as $$
declare
  v_device public.device_pairs;
begin
  select d.* into v_device from public.device_pairs d where d.id = p_device_id for update of d;
  if v_device.id is null or v_device.status <> 'active' then
    raise exception 'device is not paired or has been revoked' using errcode = 'CP401';
  end if;
  return v_device;
end
$$;

-- API `PUT /v1/devices/me/tokens`: the app's current push tokens. A token sent here replaces
-- the stored one and is valid again (its invalidation is cleared); a token not sent is kept.
create or replace function public.update_device_tokens(
  p_device_id uuid, p_fcm_token text, p_voip_token text, p_apns_token text)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_device public.device_pairs;
begin
  if p_fcm_token is null and p_voip_token is null and p_apns_token is null then
    raise exception 'invalid tokens: send at least one of fcm_token, voip_token, apns_token'
      using errcode = 'CP422';
  end if;
  perform private.active_device(p_device_id);
  update public.device_pairs d
     set fcm_token = coalesce(p_fcm_token, d.fcm_token),
         fcm_token_invalidated_at = case when p_fcm_token is null then d.fcm_token_invalidated_at end,
         fcm_token_invalid_reason = case when p_fcm_token is null then d.fcm_token_invalid_reason end,
         voip_token = coalesce(p_voip_token, d.voip_token),
         voip_token_invalidated_at = case when p_voip_token is null then d.voip_token_invalidated_at end,
         voip_token_invalid_reason = case when p_voip_token is null then d.voip_token_invalid_reason end,
         apns_token = coalesce(p_apns_token, d.apns_token),
         apns_token_invalidated_at = case when p_apns_token is null then d.apns_token_invalidated_at end,
         apns_token_invalid_reason = case when p_apns_token is null then d.apns_token_invalid_reason end,
         last_seen_at = now()
   where d.id = p_device_id
  returning d.* into v_device;
  return jsonb_build_object(
    'fcm_token_valid', v_device.fcm_token is not null and v_device.fcm_token_invalidated_at is null,
    'voip_token_valid', v_device.voip_token is not null and v_device.voip_token_invalidated_at is null,
    'apns_token_valid', v_device.apns_token is not null and v_device.apns_token_invalidated_at is null);
end
$$;

-- API `POST /v1/devices/me/heartbeat`: last seen, app version and permissions (a value not
-- sent is kept).
create or replace function public.device_heartbeat(
  p_device_id uuid, p_app_version text, p_notification_permission boolean,
  p_full_screen_intent_permission boolean)
returns timestamptz
language plpgsql security definer
set search_path = ''
as $$
declare
  v_seen timestamptz;
begin
  perform private.active_device(p_device_id);
  update public.device_pairs d
     set last_seen_at = now(),
         app_version = coalesce(p_app_version, d.app_version),
         notification_permission = coalesce(p_notification_permission, d.notification_permission),
         full_screen_intent_permission =
           coalesce(p_full_screen_intent_permission, d.full_screen_intent_permission)
   where d.id = p_device_id
  returning d.last_seen_at into v_seen;
  return v_seen;
end
$$;

revoke all on function public.claim_pairing_code(text, text, text, text, text, text, text, text),
  public.device_credentials(uuid), public.update_device_tokens(uuid, text, text, text),
  public.device_heartbeat(uuid, text, boolean, boolean), private.active_device(uuid)
  from public, anon, authenticated;
grant execute on function public.claim_pairing_code(text, text, text, text, text, text, text, text),
  public.device_credentials(uuid), public.update_device_tokens(uuid, text, text, text),
  public.device_heartbeat(uuid, text, boolean, boolean), private.active_device(uuid)
  to service_role;
