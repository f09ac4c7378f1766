-- Pairing nobody can lock out (issue 11, item 9).
--
-- Before: the app sent six digits and nothing else, so a wrong code counted against every
-- code open at that moment, and five wrong guesses from anyone locked every household out.
-- The codes were an unsalted SHA-256 of six digits, reversed by anyone who reads the table.
--
-- Now:
-- * the QR code or link the dashboard shows carries the pairing id (the pending device's id,
--   a random UUID) with the code, and the app sends both: a guess is weighed against that one
--   code only. A guess naming no open pairing cannot succeed and counts against nothing;
-- * a per-code limit (5 wrong attempts, then the code is locked) and a global guess budget
--   (wrong attempts at open codes, all households together, per window): once it is spent no
--   guess is weighed until the window ends (the API answers 429 with Retry-After). Spending
--   it takes budget / 5 open pairing ids, which only their households' QR codes carry;
-- * a locked or expired code is answered exactly as a wrong one (the API's 403), so the
--   answer never confirms that guessed digits were right;
-- * codes are stored as HMAC-SHA256 under a server-side key, with the pairing id as salt.
--   The key is in private.pairing_keys, readable only by the owner of these functions.
--
-- Settings: one row in private.pairing_settings (owner only; change with an UPDATE).

create table private.pairing_settings (
  singleton boolean primary key default true
    constraint pairing_settings_singleton check (singleton),
  -- How long a code may be claimed.
  code_lifetime interval not null default interval '10 minutes'
    constraint pairing_settings_code_lifetime_check
    check (private.between_('pairing_settings.code_lifetime', code_lifetime,
                            interval '1 minute', interval '1 day')),
  -- Wrong attempts a code survives; at this many it is locked.
  max_failures integer not null default 5
    constraint pairing_settings_max_failures_check
    check (private.between_('pairing_settings.max_failures', max_failures, 1, 20)),
  -- Wrong attempts at open codes, all households together, per guess_window.
  guess_budget integer not null default 1000
    constraint pairing_settings_guess_budget_check
    check (private.between_('pairing_settings.guess_budget', guess_budget, 1, 1000000)),
  guess_window interval not null default interval '1 hour'
    constraint pairing_settings_guess_window_check
    check (private.between_('pairing_settings.guess_window', guess_window,
                            interval '1 minute', interval '1 day'))
);
insert into private.pairing_settings default values;

-- The global budget's counter: wrong attempts since window_start (a fixed window).
create table private.pairing_guesses (
  singleton boolean primary key default true
    constraint pairing_guesses_singleton check (singleton),
  window_start timestamptz not null default now(),
  wrong integer not null default 0
);
insert into private.pairing_guesses default values;

-- The server-side key of the code hashes. Rotating it (update ... set key =
-- extensions.gen_random_bytes(32)) makes every open code invalid; admins create new ones.
create table private.pairing_keys (
  singleton boolean primary key default true
    constraint pairing_keys_singleton check (singleton),
  key bytea not null default extensions.gen_random_bytes(32)
    constraint pairing_keys_key_check check (length(key) >= 32),
  created_at timestamptz not null default now()
);
insert into private.pairing_keys default values;

revoke all on private.pairing_settings, private.pairing_guesses, private.pairing_keys
  from public, anon, authenticated, service_role;

create or replace function private.pairing_code_lifetime() returns interval
language sql stable
set search_path = ''
as $$ select s.code_lifetime from private.pairing_settings s $$;
create or replace function private.pairing_max_failures() returns integer
language sql stable
set search_path = ''
as $$ select s.max_failures from private.pairing_settings s $$;

-- HMAC-SHA256 of "<pairing id>:<code>" under the server key. Without the key the million
-- possible codes cannot be tried against a stored hash; the pairing id makes equal codes of
-- two pairings hash differently.
create or replace function private.pairing_code_hash(p_pairing_id uuid, p_code text)
returns text
language sql stable
set search_path = ''
as $$
  select encode(extensions.hmac(convert_to(p_pairing_id::text || ':' || p_code, 'UTF8'),
                                k.key, 'sha256'), 'hex')
  from private.pairing_keys k
$$;

-- The old, unkeyed hash and the lookup by hash are gone: a claim names its pairing.
drop function private.pairing_code_hash(text);
drop index public.device_pairs_pending_code_idx;

revoke all on function private.pairing_code_lifetime(), private.pairing_max_failures(),
  private.pairing_code_hash(uuid, text) from public, anon, authenticated, service_role;

-- Codes stored under the old hash can never match again: close them (the dashboard shows them
-- expired; an admin creates a new code).
update public.device_pairs d
   set pairing_code_expires_at = least(d.pairing_code_expires_at, now())
 where d.status = 'pending';

-- RPC (dashboard): an admin of the relative's household creates a pairing code. Six digits
-- from the server's CSPRNG, valid code_lifetime, replacing any earlier unused code of the
-- relative (that pending device is deleted, so its pairing id stops working too). The code
-- is returned once, never stored. Show `pairing_id` and `code` together in the QR code or
-- link; `pairing_id` is the pending device's id (`device_id`).
drop function public.create_pairing_code(uuid);
create function public.create_pairing_code(p_relative_id uuid)
returns table (pairing_id uuid, device_id uuid, code text, expires_at timestamptz)
language plpgsql security definer
set search_path = ''
as $$
declare
  v_relative public.relatives;
  v_code text;
  v_expires timestamptz := now() + private.pairing_code_lifetime();
  v_device uuid := gen_random_uuid();
begin
  select r.* into v_relative from public.relatives r
   where r.id = p_relative_id
     and r.household_id in (select private.admin_household_ids())
   for update of r;  -- two admins pressing at once: one code, not a unique violation
  if v_relative.id is null then
    -- Same answer for "no such relative" and "not an admin of their household".
    raise exception 'relative % not found', p_relative_id using errcode = 'P0002';
  end if;
  -- 48 random bits reduced to six digits (the modulo bias is below one in 10^8).
  v_code := lpad(((('x' || encode(extensions.gen_random_bytes(6), 'hex'))::bit(48)::bigint)
                  % 1000000)::text, 6, '0');
  delete from public.device_pairs d where d.relative_id = p_relative_id and d.status = 'pending';
  insert into public.device_pairs (id, household_id, relative_id, status, pairing_code_hash,
                                   pairing_code_expires_at, created_by)
  values (v_device, v_relative.household_id, p_relative_id, 'pending',
          private.pairing_code_hash(v_device, v_code), v_expires, (select auth.uid()));
  return query select v_device, v_device, v_code, v_expires;
end
$$;
revoke all on function public.create_pairing_code(uuid) from public, anon;
grant execute on function public.create_pairing_code(uuid) to authenticated;

-- API: the app claims the code of one pairing. Returns {"outcome": "paired", "device_id",
-- "relative": {...}, "replaced_device_id"}, {"outcome": "invalid"} for a wrong, expired or
-- locked code or an unknown pairing (deliberately one answer), or {"outcome": "busy",
-- "retry_after": seconds} while the global guess budget is spent. Refusals are returned, not
-- raised, so that the counts they add are committed.
--
-- Pairing revokes the relative's earlier active device: a relative has one paired device.
drop function public.claim_pairing_code(text, text, text, text, text, text, text, text);
create function public.claim_pairing_code(
  p_pairing_id uuid, p_code text, p_secret_hash text, p_platform text, p_app_version text,
  p_label text, p_fcm_token text default null, p_voip_token text default null,
  p_apns_token text default null)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_settings private.pairing_settings;
  v_guesses private.pairing_guesses;
  v_pending public.device_pairs;
  v_hash text;
  v_replaced uuid;
  v_relative public.relatives;
  v_household_name text;
begin
  if p_pairing_id is null then
    raise exception 'invalid pairing_id: required (it is in the QR code or link with the code)'
      using errcode = 'CP422';
  end if;
  if p_code is null or p_code !~ '^[0-9]{6}$' then
    raise exception 'invalid code: must be exactly 6 digits' using errcode = 'CP422';
  end if;
  if p_secret_hash is null or p_secret_hash !~ '^[0-9a-f]{64}$' then
    raise exception 'invalid secret_hash: must be 64 lowercase hexadecimal characters'
      using errcode = 'CP422';
  end if;
  select * into v_settings from private.pairing_settings;

  -- The global budget. Read without a lock, so that claims (and floods of guesses at unknown
  -- pairings) do not queue behind one row; concurrent wrong guesses may overshoot the budget
  -- by at most the number of claims running at that moment.
  select g.* into v_guesses from private.pairing_guesses g;
  if v_guesses.window_start + v_settings.guess_window <= now() then
    update private.pairing_guesses g set window_start = now(), wrong = 0
     where g.window_start = v_guesses.window_start
    returning g.* into v_guesses;
    if v_guesses.window_start is null then  -- another claim started the new window first
      select g.* into v_guesses from private.pairing_guesses g;
    end if;
  end if;
  if v_guesses.wrong >= v_settings.guess_budget then
    return jsonb_build_object(
      'outcome', 'busy',
      'retry_after', greatest(1, ceil(extract(epoch from
                       v_guesses.window_start + v_settings.guess_window - now())))::integer);
  end if;

  -- Computed whatever follows, so every refusal costs the same work.
  v_hash := private.pairing_code_hash(p_pairing_id, p_code);
  select d.* into v_pending from public.device_pairs d
   where d.id = p_pairing_id and d.status = 'pending'
   for update of d;
  if v_pending.id is null
     or v_pending.pairing_code_expires_at <= now()
     or v_pending.pairing_failed_attempts >= v_settings.max_failures then
    -- No open code to weigh the guess against: it cannot succeed, and counts against nothing.
    return jsonb_build_object('outcome', 'invalid');
  end if;
  if v_pending.pairing_code_hash is distinct from v_hash then
    update public.device_pairs d
       set pairing_failed_attempts = d.pairing_failed_attempts + 1
     where d.id = v_pending.id;
    update private.pairing_guesses g set wrong = g.wrong + 1;
    return jsonb_build_object('outcome', 'invalid');
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
revoke all on function public.claim_pairing_code(uuid, text, text, text, text, text, text, text, text)
  from public, anon, authenticated;
grant execute on function public.claim_pairing_code(uuid, text, text, text, text, text, text, text, text)
  to service_role;
