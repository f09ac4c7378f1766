-- Pairing budgets nobody else can spend, and the same work on every refusal (issue 25,
-- items 2, 5 and 7a).
--
-- Before: one global budget of 1,000 wrong guesses an hour at open codes, all households
-- together. Any signed-up user could create a household and codes, guess wrong at its own
-- codes 5 times each, and fill the budget in seconds: every household's correct, fresh code
-- then got 429 for up to an hour. And a wrong guess at an open code did two UPDATEs and a
-- commit while a guess at an unknown pairing did nothing, which timing told apart.
--
-- Now (the limits are also in README "Pairing"):
-- * per code: `max_failures` wrong attempts (5), then the code is locked (unchanged);
-- * per household: every refused guess naming a pairing id that exists (open, expired,
--   locked or used) counts against THAT pairing's household: `household_budget` (25) per
--   `guess_window` (1 hour, a fixed window). Spent: that household's pairings answer 429
--   until its window ends; no other household is touched. Only whoever has the household's
--   QR codes can name its pairing ids, so only the household (or whoever it showed them to)
--   spends it;
-- * global, for unknown ids only: guesses naming a pairing id that does not exist count
--   against `unknown_budget` (10,000) per window, in 16 shards (so a flood does not queue
--   behind one row). Spent: every pairing answers 429 until the window ends. No account's
--   own codes reach it: filling it takes guesses at ids that exist nowhere, from many client
--   addresses (the API limits each address, IPv6 per /64);
-- * every refusal (unknown, wrong, expired, locked, used) runs the same statements: the
--   device lookup, both budget reads, the failed-attempt UPDATE (it matches the row only for
--   a wrong code at an open pairing) and one budget-counter upsert, then commits. Nothing is
--   skipped on the cheap paths, so they cost what the wrong-code path costs;
-- * a pairing that would leave the relative without any push token (no fcm_token and no
--   voip_token) is refused before anything else, with the reason: it used to revoke the
--   relative's working device and the calls then failed with "the paired device has no
--   valid push token".

alter table private.pairing_settings
  add column household_budget integer not null default 25
    constraint pairing_settings_household_budget_check
    check (private.between_('pairing_settings.household_budget', household_budget, 1, 100000)),
  add column unknown_budget integer not null default 10000
    constraint pairing_settings_unknown_budget_check
    check (private.between_('pairing_settings.unknown_budget', unknown_budget, 1, 10000000)),
  drop column guess_budget;

drop table private.pairing_guesses;

-- One counter per scope: 'household:<id>' or 'unknown:<shard 0..15>'. A fixed window each.
create table private.pairing_budgets (
  scope text primary key,
  window_start timestamptz not null default now(),
  spent integer not null default 0
);
revoke all on private.pairing_budgets from public, anon, authenticated, service_role;

-- A row per household that ever had a refused guess, and 16 shards: an old window's row is
-- reset by the upsert that starts the next one, so the table stays this small.

-- The scope a guess counts against: its pairing's household, or a shard of the unknown pool.
create or replace function private.pairing_scope(p_pairing_id uuid, p_household_id uuid)
returns text
language sql immutable
set search_path = ''
as $$
  select case when p_household_id is not null then 'household:' || p_household_id::text
              else 'unknown:' || (abs(hashtext(p_pairing_id::text)) % 16)::text end
$$;
revoke all on function private.pairing_scope(uuid, uuid)
  from public, anon, authenticated, service_role;

create or replace function public.claim_pairing_code(
  p_pairing_id uuid, p_code text, p_secret_hash text, p_platform text, p_app_version text,
  p_label text, p_fcm_token text default null, p_voip_token text default null,
  p_apns_token text default null)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_settings private.pairing_settings;
  v_pair public.device_pairs;
  v_hash text;
  v_scope text;
  v_now timestamptz := now();
  v_unknown_spent integer;
  v_unknown_wait double precision;
  v_scope_spent integer;
  v_scope_wait double precision;
  v_open boolean;
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
  if nullif(btrim(p_fcm_token), '') is null and nullif(btrim(p_voip_token), '') is null then
    raise exception 'invalid fcm_token: a device needs a push token to ring (fcm_token, or '
                    'voip_token on iOS); nothing was paired and the current device keeps working'
      using errcode = 'CP422';
  end if;
  select * into v_settings from private.pairing_settings;

  -- Computed whatever follows, so every refusal costs the same work.
  v_hash := private.pairing_code_hash(p_pairing_id, p_code);
  select d.* into v_pair from public.device_pairs d where d.id = p_pairing_id for update of d;
  v_scope := private.pairing_scope(p_pairing_id, v_pair.household_id);

  -- Both budgets are read on every path, without a lock (concurrent refusals may overshoot
  -- a budget by the number of claims running at that moment).
  select coalesce(sum(b.spent), 0),
         min(extract(epoch from b.window_start + v_settings.guess_window - v_now))
    into v_unknown_spent, v_unknown_wait
    from private.pairing_budgets b
   where b.scope like 'unknown:%' and b.window_start + v_settings.guess_window > v_now;
  select coalesce(sum(b.spent), 0),
         min(extract(epoch from b.window_start + v_settings.guess_window - v_now))
    into v_scope_spent, v_scope_wait
    from private.pairing_budgets b
   where b.scope = v_scope and b.window_start + v_settings.guess_window > v_now;
  if v_unknown_spent >= v_settings.unknown_budget then
    return jsonb_build_object('outcome', 'busy',
                              'retry_after', greatest(1, ceil(v_unknown_wait))::integer);
  end if;
  if v_pair.household_id is not null and v_scope_spent >= v_settings.household_budget then
    return jsonb_build_object('outcome', 'busy',
                              'retry_after', greatest(1, ceil(v_scope_wait))::integer);
  end if;

  v_open := v_pair.status = 'pending' and v_pair.pairing_code_expires_at > v_now
            and v_pair.pairing_failed_attempts < v_settings.max_failures;
  if not coalesce(v_open and v_pair.pairing_code_hash = v_hash, false) then
    -- Every refusal: the same two statements. The first changes a row only for a wrong code
    -- at an open pairing (the per-code lock); the second counts the refusal against the
    -- pairing's household, or the unknown pool.
    update public.device_pairs d
       set pairing_failed_attempts = d.pairing_failed_attempts + 1
     where d.id = p_pairing_id and coalesce(v_open, false);
    insert into private.pairing_budgets as b (scope, window_start, spent)
    values (v_scope, v_now, 1)
    on conflict (scope) do update
      set window_start = case when b.window_start + v_settings.guess_window <= v_now
                              then v_now else b.window_start end,
          spent = case when b.window_start + v_settings.guess_window <= v_now
                       then 1 else b.spent + 1 end;
    return jsonb_build_object('outcome', 'invalid');
  end if;

  update public.device_pairs d
     set status = 'revoked', revoked_at = now(),
         revoked_reason = 'replaced by a newly paired device'
   where d.relative_id = v_pair.relative_id and d.status = 'active'
  returning d.id into v_replaced;

  update public.device_pairs d
     set status = 'active', platform = p_platform, app_version = p_app_version, label = p_label,
         fcm_token = p_fcm_token, voip_token = p_voip_token, apns_token = p_apns_token,
         fcm_token_invalidated_at = null, fcm_token_invalid_reason = null,
         voip_token_invalidated_at = null, voip_token_invalid_reason = null,
         apns_token_invalidated_at = null, apns_token_invalid_reason = null,
         secret_hash = p_secret_hash, paired_at = now(), last_seen_at = now(),
         pairing_code_hash = null, pairing_code_expires_at = null, pairing_failed_attempts = 0
   where d.id = v_pair.id;

  select r.* into v_relative from public.relatives r where r.id = v_pair.relative_id;
  select h.name into v_household_name from public.households h where h.id = v_relative.household_id;
  return jsonb_build_object(
    'outcome', 'paired',
    'device_id', v_pair.id,
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
