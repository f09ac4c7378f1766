-- Typed pairing (issue 27, item 2): a person can pair by typing the 6-digit code and a short
-- pairing reference the dashboard shows beside it, not only by scanning the QR code.
--
--   device_pairs.pairing_reference     8 Crockford base32 characters (40 bits), pending rows only
--   private.set_pairing_reference()    trigger: a new pending row gets one; leaving pending clears it
--   private.pairing_id_for_reference() the reference -> its pairing id (or an id nobody has)
--   public.pair_device_by_reference()  pair_device, after resolving the reference (API only)
--   public.create_pairing()            create_pairing_code, also returning the reference (dashboard)
--
-- Why a resolution in front of the claim, not a change inside it: claim_pairing_code and
-- pair_device keep their signatures and bodies (another change owns the pairing limits in
-- them). A typed reference is turned into the pairing id the QR code would have carried; from
-- there the claim runs exactly as for a scanned code, with every limit it has.
--
-- Why 8 characters: a guess that names an existing pairing counts against that pairing's code
-- (locked at 5 wrong) and its household's budget; a guess naming none counts against the
-- global budget of unknown ids (10,000 an hour). With R = 32^8 = 1.1e12 references and
-- N = 1e4 codes open at once (generous: only pending, unexpired codes resolve), a stranger's
-- 10,000 guesses an hour hit an open reference 10,000 * N / R = 9e-5 times an hour, and each
-- hit still needs the right code (1e-6): 9e-11 pairings an hour, 8e-7 a year. The arithmetic
-- is in the README ("Pairing") and docs/APP_MIGRATION.md.
--
-- Equal work: pairing_id_for_reference does one index lookup and draws one random UUID on
-- every call, found or not; an unknown reference becomes a pairing id with no device row, so
-- the claim treats it as the unknown pairing id it is (never NULL, which the claim refuses
-- with a 422 that would tell an unknown reference from a wrong code).

alter table public.device_pairs add column pairing_reference text
  constraint device_pairs_pairing_reference_check
  check (pairing_reference is null or pairing_reference ~ '^[0-9A-HJKMNP-TV-Z]{8}$');

-- One pending pairing per reference; claimed, revoked and replaced rows hold none.
create unique index device_pairs_pending_reference_idx on public.device_pairs (pairing_reference)
  where status = 'pending';

-- 40 random bits as 8 Crockford base32 characters (no I, L, O, U: nothing to misread).
create or replace function private.new_pairing_reference() returns text
language sql volatile
set search_path = ''
as $$
  select string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                           ((r.bits >> (5 * (7 - i))) & 31)::integer + 1, 1), '' order by i)
  from (select ('x' || encode(extensions.gen_random_bytes(5), 'hex'))::bit(40)::bigint as bits) r,
       generate_series(0, 7) as i
$$;

-- A typed reference in canonical form: case, spaces and hyphens do not matter, and the
-- letters Crockford base32 reads as digits (O as 0; I and L as 1) are read so. NULL when what
-- is left is not 8 characters of the alphabet.
create or replace function private.canonical_pairing_reference(p_reference text) returns text
language sql immutable
set search_path = ''
as $$
  select case when c ~ '^[0-9A-HJKMNP-TV-Z]{8}$' then c end
  from (select translate(upper(regexp_replace(coalesce(p_reference, ''), '[\s-]', '', 'g')),
                         'OIL', '011') as c) t
$$;

-- Security definer: whoever may insert a pending row (the dashboard's RPC, the service role)
-- gets a reference without being granted the private helpers.
create or replace function private.set_pairing_reference() returns trigger
language plpgsql security definer
set search_path = ''
as $$
begin
  if new.status = 'pending' then
    if new.pairing_reference is null then
      -- A clash among pending rows (N / 1.1e12) is caught by the unique index; draw again.
      loop
        new.pairing_reference := private.new_pairing_reference();
        exit when not exists (select 1 from public.device_pairs d
                               where d.pairing_reference = new.pairing_reference
                                 and d.status = 'pending');
      end loop;
    end if;
  else
    -- Claimed (active) or revoked: the reference can never pair again, so it is not kept.
    new.pairing_reference := null;
  end if;
  return new;
end
$$;

create trigger device_pairs_pairing_reference
  before insert or update of status on public.device_pairs
  for each row execute function private.set_pairing_reference();

-- Rows pending when this ran get a reference too (their codes may still be open).
update public.device_pairs d set pairing_reference = private.new_pairing_reference()
 where d.status = 'pending' and d.pairing_reference is null;

-- The pairing id a typed reference names: the pending row with that reference and an
-- unexpired code, or else a fresh random UUID (no device has it). Same work either way.
create or replace function private.pairing_id_for_reference(p_reference text) returns uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_nobody uuid := gen_random_uuid();
  v_found uuid;
begin
  select d.id into v_found from public.device_pairs d
   where d.pairing_reference = private.canonical_pairing_reference(p_reference)
     and d.status = 'pending'
     and d.pairing_code_expires_at > now();
  return coalesce(v_found, v_nobody);
end
$$;

revoke all on function private.new_pairing_reference(), private.canonical_pairing_reference(text),
  private.set_pairing_reference(), private.pairing_id_for_reference(text)
  from public, anon, authenticated, service_role;

-- API: the app claims a code with the typed reference instead of the QR code's pairing id.
-- Answers exactly as pair_device (the claim's outcomes, plus the household id when paired).
create or replace function public.pair_device_by_reference(
  p_reference text, p_code text, p_secret_hash text, p_platform text, p_app_version text,
  p_label text, p_fcm_token text, p_voip_token text, p_apns_token text)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
begin
  if private.canonical_pairing_reference(p_reference) is null then
    -- The reference's form is public (the dashboard shows it): saying so leaks nothing.
    raise exception 'invalid pairing_reference: must be the 8 letters and digits shown beside the code'
      using errcode = 'CP422';
  end if;
  return public.pair_device(private.pairing_id_for_reference(p_reference), p_code, p_secret_hash,
                            p_platform, p_app_version, p_label, p_fcm_token, p_voip_token,
                            p_apns_token);
end
$$;
revoke all on function public.pair_device_by_reference(text, text, text, text, text, text, text,
                                                        text, text)
  from public, anon, authenticated;
grant execute on function public.pair_device_by_reference(text, text, text, text, text, text,
                                                           text, text, text)
  to service_role;

-- RPC (dashboard): create_pairing_code, with the reference to show beside the code (formatted
-- for reading aloud and typing: "ABCD-EFGH"). The QR code or link still carries pairing_id.
create or replace function public.create_pairing(p_relative_id uuid)
returns table (pairing_id uuid, device_id uuid, code text, reference text,
               expires_at timestamptz)
language plpgsql security definer
set search_path = ''
as $$
declare
  v_created record;
  v_reference text;
begin
  select c.* into strict v_created from public.create_pairing_code(p_relative_id) c;
  select d.pairing_reference into strict v_reference
    from public.device_pairs d where d.id = v_created.pairing_id;
  return query select v_created.pairing_id, v_created.device_id, v_created.code,
                      substr(v_reference, 1, 4) || '-' || substr(v_reference, 5, 4),
                      v_created.expires_at;
end
$$;
revoke all on function public.create_pairing(uuid) from public, anon;
grant execute on function public.create_pairing(uuid) to authenticated;

-- Forgiving token refresh: a refresh that carries no token (every key absent, null or "",
-- which the API reads as "no token": Android's getDevicePushTokenVoIP() answers "") changes no
-- token and answers their current validity, instead of 422. Refusing it protected nothing;
-- it only made an Android app's routine `voip_token: ""` refresh fail. Otherwise unchanged.
create or replace function public.update_device_tokens(
  p_device_id uuid, p_fcm_token text, p_voip_token text, p_apns_token text)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_device public.device_pairs;
begin
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
