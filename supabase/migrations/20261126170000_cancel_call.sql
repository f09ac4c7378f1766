-- A family member cancels a call (issue 11, item 7).
--
--   session   queue row      what cancel_call does
--   queued    queued / due   row and session cancelled: never sent
--   queued    claimed        row cancelled under the claim (compare-and-set: the worker's
--                            record_push_results then finds the row no longer its own and
--                            answers lost_lease), session cancelled; the push may already be
--                            on its way, so the device also gets a cancel notice (below), sent
--                            no earlier than the call's own push could go
--   ringing   sent           session cancelled; the device gets a cancel notice
--   cancelled                a repeat: nothing changes
--   accepted, in_progress    refused: the relative has answered
--   anything else            refused: the call is over
--
-- A cancel notice tells the phone to stop ringing: Android, an FCM data message with
-- `type: cancel`; iOS, a background push to the app's regular APNs token (never a VoIP push:
-- iOS terminates an app that gets a VoIP push without reporting a new call to CallKit). No
-- notice is made when the device has no such token, or when its ring window is already over.
-- Notices are an outbox the worker drains with the same claim / lease / record pattern as
-- calls (claim_cancel_notices, record_cancel_results); a notice not sent within the ring
-- window expires, since the phone has stopped ringing by then anyway.
--
-- The phone's next report on a cancelled call: `accepted` gets 410 (the app ends the call);
-- see the README for the other events.

create table private.cancel_notices (
  id uuid primary key default gen_random_uuid(),
  -- One notice per session: a repeated cancel adds nothing.
  call_session_id uuid not null unique references public.call_sessions (id) on delete cascade,
  household_id uuid not null references public.households (id) on delete cascade,
  device_id uuid references public.device_pairs (id) on delete set null,
  platform text not null
    constraint cancel_notices_platform_check
    check (private.one_of('cancel_notices.platform', platform, '{ios,android}')),
  provider text not null
    constraint cancel_notices_provider_check
    check (private.one_of('cancel_notices.provider', provider, '{apns,fcm}')),
  push_token text not null,
  status text not null default 'queued'
    constraint cancel_notices_status_check
    check (private.one_of('cancel_notices.status', status,
                          '{queued,claimed,sent,failed,expired}')),
  send_at timestamptz not null,
  -- The end of the ring window: after it the phone has stopped ringing by itself.
  deadline_at timestamptz not null,
  next_attempt_at timestamptz,
  attempts integer not null default 0,
  locked_by text,
  locked_until timestamptz,
  provider_message_id text,
  last_error text,
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint cancel_notices_deadline_check check (deadline_at >= send_at),
  constraint cancel_notices_lease_check check (
    (status = 'claimed') = (locked_by is not null and locked_until is not null))
);
create index cancel_notices_ready_idx on private.cancel_notices
  ((coalesce(next_attempt_at, send_at))) where status = 'queued';
create index cancel_notices_lease_idx on private.cancel_notices (locked_until)
  where status = 'claimed';
create index cancel_notices_household_idx on private.cancel_notices (household_id);
create index cancel_notices_device_idx on private.cancel_notices (device_id);
create trigger cancel_notices_touch before update on private.cancel_notices
  for each row execute function private.touch_updated_at();
-- Only the functions below (security definer) read or write it.
revoke all on private.cancel_notices from public, anon, authenticated, service_role;

-- RPC (dashboard): cancel a call of the caller's household. Any member may (as any member may
-- request a call); the service role may too. Returns {"session_id", "status", "previous_status",
-- "changed", "cancel_push"} where cancel_push says whether the phone will be told to stop.
create or replace function public.cancel_call(p_session_id uuid)
returns jsonb
language plpgsql security definer
set search_path = ''
as $$
declare
  v_session public.call_sessions;
  v_queue public.notification_queue;
  v_reason text := 'cancelled by a family member';
  v_notify boolean := false;
  v_send_at timestamptz;
  v_deadline timestamptz;
  v_device uuid;
  v_notice boolean := false;
begin
  -- Same answer for "no such call" and "not your household".
  select c.* into v_session from public.call_sessions c
   where c.id = p_session_id
     and ((select auth.role()) = 'service_role'
          or c.household_id in (select private.member_household_ids()));
  if v_session.id is null then
    raise exception 'call session % not found', p_session_id using errcode = 'P0002';
  end if;
  -- Lock the queue row before the session, in the order the worker's claim and record take
  -- them, so a cancel racing a record waits instead of deadlocking. Then read the session
  -- again: the record may have moved it to ringing meanwhile.
  select q.* into v_queue from public.notification_queue q
   where q.call_session_id = p_session_id for update of q;
  select c.* into v_session from public.call_sessions c where c.id = p_session_id for update of c;

  if v_session.status = 'cancelled' then
    return jsonb_build_object(
      'session_id', v_session.id, 'status', v_session.status,
      'previous_status', v_session.status, 'changed', false,
      'cancel_push', exists (select 1 from private.cancel_notices n
                             where n.call_session_id = v_session.id));
  end if;
  if v_session.status in ('accepted', 'in_progress') then
    raise exception 'call session is %: the call has been answered and cannot be cancelled',
      v_session.status
      using errcode = 'P0001', hint = 'The call ends when the relative hangs up.';
  end if;
  if v_session.status <> all (array['queued', 'ringing']) then
    raise exception 'call session is %: the call is already over', v_session.status
      using errcode = 'P0001';
  end if;

  if v_session.status = 'queued' and v_queue.status in ('queued', 'due') then
    update public.notification_queue q
       set status = 'cancelled', last_error = v_reason
     where q.id = v_queue.id and q.status in ('queued', 'due');
  elsif v_session.status = 'queued' and v_queue.status = 'claimed' then
    -- Compare-and-set against the claim: the holder's result will not be recorded.
    update public.notification_queue q
       set status = 'cancelled', locked_by = null, locked_until = null,
           last_error = v_reason || ' while claimed by ' || v_queue.locked_by
                        || '; its push may already be on its way'
     where q.id = v_queue.id and q.status = 'claimed' and q.locked_by = v_queue.locked_by;
    v_notify := true;
    -- After the call's own push: a cancel that overtook it would be ignored by the app (no
    -- such call yet), and the phone would then ring. Pushes leave within a second of send_at.
    v_send_at := greatest(now(), coalesce(v_queue.next_attempt_at, v_queue.send_at))
                 + interval '2 seconds';
    v_device := v_queue.device_id;
  elsif v_session.status = 'ringing' then
    v_notify := true;
    v_send_at := now();
    v_device := v_session.device_id;
  end if;

  update public.call_sessions c
     set status = 'cancelled', ended_at = now(), failure_reason = v_reason
   where c.id = v_session.id;

  if v_notify then
    v_deadline := coalesce(v_session.ringing_at, v_send_at) + v_session.ring_timeout
                  + interval '15 seconds';  -- the phone's clock and the push's own travel
    if v_deadline > now() then
      insert into private.cancel_notices (call_session_id, household_id, device_id, platform,
                                          provider, push_token, send_at, deadline_at)
      select v_session.id, v_session.household_id, d.id, d.platform, t.provider, t.token,
             v_send_at, greatest(v_deadline, v_send_at)
      from public.device_pairs d
      cross join lateral (
        select case when d.platform = 'ios' and d.apns_token is not null
                         and d.apns_token_invalidated_at is null then 'apns'
                    when d.platform = 'android' and d.fcm_token is not null
                         and d.fcm_token_invalidated_at is null then 'fcm' end as provider,
               case when d.platform = 'ios' then d.apns_token else d.fcm_token end as token
      ) t
      where d.id = v_device and d.status = 'active' and t.provider is not null
      on conflict (call_session_id) do nothing;
      v_notice := found;
      if v_notice then
        perform pg_notify(private.notify_channel(),
          json_build_object('event', 'cancel', 'count', 1, 'earliest', v_send_at)::text);
      end if;
    end if;
  end if;

  return jsonb_build_object(
    'session_id', v_session.id, 'status', 'cancelled', 'previous_status', v_session.status,
    'changed', true, 'cancel_push', v_notice);
end
$$;
revoke all on function public.cancel_call(uuid) from public, anon;
grant execute on function public.cancel_call(uuid) to authenticated, service_role;

-- Worker: claim cancel notices that may go now, under a lease. Notices past their ring window
-- expire instead; leases that ran out return first.
create or replace function public.claim_cancel_notices(
  p_worker text,
  p_limit integer default 100,
  p_lease interval default interval '30 seconds',
  p_now timestamptz default now())
returns table (
  notice_id uuid, call_session_id uuid, household_id uuid, device_id uuid, platform text,
  provider text, push_token text, deadline_at timestamptz, attempts integer)
language plpgsql security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform private.check_worker_args(p_worker, p_limit, p_lease);
  update private.cancel_notices n
     set status = 'expired', locked_by = null, locked_until = null,
         last_error = left(coalesce(n.last_error || '; ', '')
                           || 'not sent before the ring window ended', 2000)
   where (n.status = 'queued' or (n.status = 'claimed' and n.locked_until < p_now))
     and n.deadline_at < p_now;
  update private.cancel_notices n
     set status = 'queued', locked_by = null, locked_until = null,
         last_error = left(coalesce(n.last_error || '; ', '') || 'lease of ' || n.locked_by
                           || ' expired', 2000)
   where n.status = 'claimed' and n.locked_until < p_now;
  return query
  with ready as (
    select n.id from private.cancel_notices n
     where n.status = 'queued' and coalesce(n.next_attempt_at, n.send_at) <= p_now
     order by coalesce(n.next_attempt_at, n.send_at)
     limit p_limit
     for update skip locked
  )
  update private.cancel_notices n
     set status = 'claimed', locked_by = p_worker, locked_until = p_now + p_lease,
         attempts = n.attempts + 1
    from ready r
   where n.id = r.id
  returning n.id, n.call_session_id, n.household_id, n.device_id, n.platform, n.provider,
            n.push_token, n.deadline_at, n.attempts;
end
$$;

-- Worker: record what happened to claimed notices (a JSON array, one object per notice:
-- {"notice_id", "outcome": delivered|retry|token_dead|config_fault|our_bug, "provider",
-- "status", "reason", "message_id", "retry_after_s", "detail"}). Only the lease holder's
-- results count (compare-and-set); others come back `lost_lease`. Returns per notice: sent,
-- retry, expired, failed or lost_lease. A dead token is marked invalid on its device.
create or replace function public.record_cancel_results(
  p_worker text, p_results jsonb, p_now timestamptz default now())
returns table (notice_id uuid, result text)
language plpgsql security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_bad text;
  v_mine uuid[];
begin
  perform private.check_worker_args(p_worker, null, null);
  if p_results is null or jsonb_typeof(p_results) <> 'array' then
    raise exception 'invalid p_results: a JSON array of results is required' using errcode = '22023';
  end if;
  select format('invalid p_results[%s]: %s', e.i - 1,
                case when jsonb_typeof(e.v) <> 'object' then 'is not an object'
                     when e.v->>'notice_id' is null then 'notice_id is missing'
                     when e.v->>'notice_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                       then 'notice_id is not a UUID'
                     when coalesce(e.v->>'outcome', '') not in
                            ('delivered', 'retry', 'token_dead', 'config_fault', 'our_bug')
                       then 'outcome is not one of delivered, retry, token_dead, config_fault, our_bug'
                     else 'retry_after_s is not a number' end)
    into v_bad
  from jsonb_array_elements(p_results) with ordinality as e(v, i)
  where jsonb_typeof(e.v) <> 'object' or e.v->>'notice_id' is null
     or e.v->>'notice_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
     or coalesce(e.v->>'outcome', '') not in ('delivered', 'retry', 'token_dead', 'config_fault', 'our_bug')
     or jsonb_typeof(e.v->'retry_after_s') not in ('number', 'null')
  order by e.i limit 1;
  if v_bad is not null then
    raise exception '%', v_bad using errcode = '22023';
  end if;

  select coalesce(array_agg(x.id), '{}') into v_mine from (
    select n.id from private.cancel_notices n
     where n.id = any (array(select (e->>'notice_id')::uuid from jsonb_array_elements(p_results) e))
       and n.status = 'claimed' and n.locked_by = p_worker and n.locked_until >= p_now
     for update of n) x;

  with r as (
    select x.*, n.deadline_at,
           left(concat_ws(' ', x.provider, nullif(x.status, 0)::text, x.reason)
                || coalesce(': ' || x.detail, ''), 2000) as error,
           make_interval(secs => greatest(coalesce(x.retry_after_s, 0),
                                          case when x.outcome = 'config_fault' then 10 else 0 end))
             as delay
    from jsonb_to_recordset(p_results) as x(notice_id uuid, outcome text, provider text,
                                            status integer, reason text, message_id text,
                                            retry_after_s double precision, detail text)
    join private.cancel_notices n on n.id = x.notice_id
    where x.notice_id = any (v_mine)
  )
  update private.cancel_notices n
     set status = case when r.outcome = 'delivered' then 'sent'
                       when r.outcome in ('retry', 'config_fault')
                            and p_now + r.delay <= r.deadline_at then 'queued'
                       when r.outcome in ('retry', 'config_fault') then 'expired'
                       else 'failed' end,
         next_attempt_at = case when r.outcome in ('retry', 'config_fault')
                                then p_now + r.delay else n.next_attempt_at end,
         sent_at = case when r.outcome = 'delivered' then p_now else n.sent_at end,
         provider_message_id = coalesce(r.message_id, n.provider_message_id),
         last_error = case when r.outcome = 'delivered' then n.last_error else r.error end,
         locked_by = null, locked_until = null
    from r
   where n.id = r.notice_id;

  -- A token the provider says is dead is dead for calls too (only while the device still
  -- has that token).
  update public.device_pairs d
     set apns_token_invalidated_at = case when n.provider = 'apns' and d.apns_token = n.push_token
                                            then coalesce(d.apns_token_invalidated_at, p_now)
                                          else d.apns_token_invalidated_at end,
         apns_token_invalid_reason = case when n.provider = 'apns' and d.apns_token = n.push_token
                                            then coalesce(d.apns_token_invalid_reason, n.last_error)
                                          else d.apns_token_invalid_reason end,
         fcm_token_invalidated_at = case when n.provider = 'fcm' and d.fcm_token = n.push_token
                                           then coalesce(d.fcm_token_invalidated_at, p_now)
                                         else d.fcm_token_invalidated_at end,
         fcm_token_invalid_reason = case when n.provider = 'fcm' and d.fcm_token = n.push_token
                                           then coalesce(d.fcm_token_invalid_reason, n.last_error)
                                         else d.fcm_token_invalid_reason end
    from private.cancel_notices n
    join jsonb_to_recordset(p_results) as x(notice_id uuid, outcome text) on x.notice_id = n.id
   where d.id = n.device_id and x.outcome = 'token_dead' and n.id = any (v_mine);

  return query
  select x.notice_id,
         case when not (x.notice_id = any (v_mine)) then 'lost_lease'
              when n.status = 'queued' then 'retry'
              else n.status end
  from jsonb_to_recordset(p_results) as x(notice_id uuid)
  left join private.cancel_notices n on n.id = x.notice_id;
end
$$;

-- Worker: when the next notice may go (or the next lease runs out); null when none is pending.
create or replace function public.next_cancel_notice_at(p_now timestamptz default now())
returns timestamptz
language sql stable security definer
set search_path = ''
as $$
  select least(
    (select min(coalesce(n.next_attempt_at, n.send_at)) from private.cancel_notices n
      where n.status = 'queued' and n.deadline_at >= p_now),
    (select min(n.locked_until) from private.cancel_notices n where n.status = 'claimed'))
$$;

revoke all on function public.claim_cancel_notices(text, integer, interval, timestamptz),
  public.record_cancel_results(text, jsonb, timestamptz),
  public.next_cancel_notice_at(timestamptz)
  from public, anon, authenticated;
grant execute on function public.claim_cancel_notices(text, integer, interval, timestamptz),
  public.record_cancel_results(text, jsonb, timestamptz),
  public.next_cancel_notice_at(timestamptz)
  to service_role;
