-- The existing CallPanion phone app's pairing answer (issue 16):
--   pair_device(...)   claim_pairing_code, answered with what the app stores
-- For the API (service_role) only. It wraps claim_pairing_code and does not redefine it.

-- The app stores the household id, the relative's id and name at pairing, and compares every
-- call push with the first two (fcm_service.dart _verifyCallOwnership). claim_pairing_code's
-- answer has the relative but not its household: add `household_id`, in the same statement
-- (so in the same transaction as the claim). Every other outcome is passed through unchanged.
create or replace function public.pair_device(
  p_pairing_id uuid, p_code text, p_secret_hash text, p_platform text, p_app_version text,
  p_label text, p_fcm_token text, p_voip_token text, p_apns_token text)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_result jsonb := public.claim_pairing_code(p_pairing_id, p_code, p_secret_hash, p_platform,
                                              p_app_version, p_label, p_fcm_token, p_voip_token,
                                              p_apns_token);
  v_household uuid;
begin
  if v_result->>'outcome' is distinct from 'paired' then
    return v_result;
  end if;
  select r.household_id into strict v_household
    from public.relatives r where r.id = (v_result->'relative'->>'id')::uuid;
  return v_result || jsonb_build_object('household_id', v_household);
end
$$;

revoke all on function public.pair_device(uuid, text, text, text, text, text, text, text, text)
  from public, anon, authenticated;
grant execute on function public.pair_device(uuid, text, text, text, text, text, text, text, text)
  to service_role;
