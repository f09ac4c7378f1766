-- The worker's side of the queue (issue 5): claim due rows under a lease, record a batch of
-- push results, renew and release leases, and say when the next row falls due.
--
-- A call goes out at its send_at, not at the next minute: the worker claims `queued` rows
-- itself the moment they fall due (phase 2 makes them `due` only once a minute, as a
-- backstop). A provider retry keeps send_at (lateness is measured from it) and waits for
-- next_attempt_at. Every function here is one transaction; no transaction is held across a
-- network call: claim, commit, send, record.
--
--   claim  queued/due (ready, session still queued) -> claimed (lease: locked_by, locked_until)
--          session no longer queued                 -> cancelled
--          relative unreachable now                 -> failed (+ session failed, alert)
--   record delivered    -> sent; session queued -> ringing (ringing_at = now)
--          retry        -> due again at now + delay; expired if that is past the deadline
--          config_fault -> as retry (at least 10 s), and the household is told once
--          token_dead   -> that token marked invalid on the device; the relative's current
--                          target (the fallback token) at once, else failed + alert
--          our_bug      -> failed + alert
--   Only the lease owner, within its lease, records (compare-and-set); a late worker's
--   results come back as `lost_lease` and change nothing.

-- Ready rows by the time they may go: send_at, or next_attempt_at for a provider retry.
create index notification_queue_ready_idx on public.notification_queue
  ((coalesce(next_attempt_at, send_at))) where status in ('queued', 'due');

-- The input checks of the worker functions: the worker id, a batch size, a lease.
create or replace function private.check_worker_args(
  p_worker text, p_limit integer, p_lease interval)
returns void
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception 'invalid p_worker: a worker id of 1 to 200 characters is required'
      using errcode = '22023';
  end if;
  if p_limit is not null and p_limit not between 1 and 10000 then
    raise exception 'invalid p_limit: % is not between 1 and 10000', p_limit using errcode = '22023';
  end if;
  if p_lease is not null and (p_lease < interval '1 second' or p_lease > interval '1 hour') then
    raise exception 'invalid p_lease: % is not between 1 second and 1 hour', p_lease
      using errcode = '22023';
  end if;
end
$$;

-- Claim up to p_limit ready rows for p_worker, oldest first, skipping rows another worker
-- holds. p_horizon claims rows that fall due that much later too, so the worker can do the
-- database work ahead of time and send each push at its send_at exactly. Returns what the worker needs to build and send each push, with the relative's
-- current target (device and token) rather than the snapshot: a token refreshed since the
-- row was queued, or a re-paired phone, is used; the row is updated to say what is sent.
create or replace function public.claim_due_calls(
  p_worker text,
  p_limit integer default 500,
  p_lease interval default interval '30 seconds',
  p_now timestamptz default now(),
  p_horizon interval default interval '0 seconds')
returns table (
  queue_id uuid, call_session_id uuid, household_id uuid, relative_id uuid, attempt smallint,
  provider_attempts integer, device_id uuid, platform text, provider text, push_token text,
  send_at timestamptz, not_before timestamptz, deadline_at timestamptz, payload jsonb,
  locked_until timestamptz)
language plpgsql
set jit = off
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform private.check_worker_args(p_worker, p_limit, p_lease);
  if p_horizon is null or p_horizon < interval '0 seconds' or p_horizon > interval '1 minute' then
    raise exception 'invalid p_horizon: % is not between 0 and 1 minute', p_horizon
      using errcode = '22023';
  end if;

  -- Leases that ran out (a worker died or hung) return at once, not at phase 2's next run.
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null,
         last_error = left(coalesce(q.last_error || '; ', '') || 'lease of ' || q.locked_by
                           || ' expired', 2000)
   where q.id in (select e.id from public.notification_queue e
                  where e.status = 'claimed' and e.locked_until < p_now
                  for update skip locked);

  return query
  with ready as materialized (
    select q.id, q.call_session_id, s.status as session_status, s.household_id as s_household,
           s.relative_id as s_relative, s.attempt as s_attempt,
           t.device_id as t_device, t.platform as t_platform, t.provider as t_provider,
           t.push_token as t_token, t.fallback_provider as t_fallback_provider,
           t.fallback_token as t_fallback_token,
           private.unreachable_reason(t.device_id, t.provider) as reason
    from public.notification_queue q
    join public.call_sessions s on s.id = q.call_session_id
    left join private.call_targets t on t.relative_id = s.relative_id
    where q.status in ('queued', 'due')
      and coalesce(q.next_attempt_at, q.send_at) <= p_now + p_horizon
      and q.deadline_at >= p_now  -- past it: phase 2 expires the row and tells the family
    order by coalesce(q.next_attempt_at, q.send_at)
    limit p_limit
    for update of q skip locked
  ),
  cancelled as (
    update public.notification_queue q
       set status = 'cancelled', last_error = 'not sent: the call is already ' || r.session_status
      from ready r
     where q.id = r.id and r.session_status <> 'queued'
  ),
  unreachable_rows as (
    update public.notification_queue q
       set status = 'failed', last_error = 'not sent: ' || r.reason
      from ready r
     where q.id = r.id and r.session_status = 'queued' and r.reason is not null
  ),
  unreachable_sessions as (
    update public.call_sessions c
       set status = 'failed', failure_reason = r.reason, ended_at = p_now
      from ready r
     where c.id = r.call_session_id and c.status = 'queued' and r.reason is not null
    returning c.id, c.household_id, c.relative_id, c.device_id, c.attempt, r.reason
  ),
  unreachable_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, dedupe_key)
    select u.household_id, u.relative_id, u.id, u.device_id,
           case when u.reason = private.unreachable_reason(null, null) then 'no_device'
                else 'invalid_token' end,
           'critical',
           format('%s could not be called (attempt %s): %s', rel.display_name, u.attempt, u.reason),
           'failed:' || u.id
    from unreachable_sessions u join public.relatives rel on rel.id = u.relative_id
    on conflict (dedupe_key) do nothing
  ),
  claimed as (
    update public.notification_queue q
       set status = 'claimed', locked_by = p_worker, locked_until = p_now + p_horizon + p_lease,
           provider_attempts = q.provider_attempts + 1,
           device_id = r.t_device, platform = r.t_platform, provider = r.t_provider,
           push_token = r.t_token, fallback_provider = r.t_fallback_provider,
           fallback_token = r.t_fallback_token
      from ready r
     where q.id = r.id and r.session_status = 'queued' and r.reason is null
    returning q.id, q.call_session_id, r.s_household, r.s_relative, r.s_attempt,
              q.provider_attempts, q.device_id, q.platform, q.provider, q.push_token, q.send_at,
              coalesce(q.next_attempt_at, q.send_at), q.deadline_at, q.payload, q.locked_until
  )
  select * from claimed c order by c.send_at;
end
$$;

-- Record a batch of push results (a JSON array, one object per claimed row):
--   {"queue_id", "outcome": delivered|retry|token_dead|config_fault|our_bug, "provider",
--    "token" (the token the push went to), "status" (HTTP), "reason", "message_id",
--    "retry_after_s", "detail"}
-- Returns one row per result: sent, retry, fallback, failed, expired or lost_lease.
create or replace function public.record_push_results(
  p_worker text, p_results jsonb, p_now timestamptz default now())
returns table (queue_id uuid, call_session_id uuid, result text)
language plpgsql
set jit = off
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_mine uuid[];
  v_bad text;
begin
  perform private.check_worker_args(p_worker, null, null);
  if p_results is null or jsonb_typeof(p_results) <> 'array' then
    raise exception 'invalid p_results: a JSON array of results is required' using errcode = '22023';
  end if;
  select format('invalid p_results[%s]: %s', e.i - 1,
                case when jsonb_typeof(e.v) <> 'object' then 'is not an object'
                     when e.v->>'queue_id' is null then 'queue_id is missing'
                     when e.v->>'queue_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                       then 'queue_id is not a UUID'
                     when coalesce(e.v->>'outcome', '') not in
                            ('delivered', 'retry', 'token_dead', 'config_fault', 'our_bug')
                       then 'outcome is not one of delivered, retry, token_dead, config_fault, our_bug'
                     when e.v->>'outcome' = 'token_dead' and e.v->>'token' is null
                       then 'token is missing (the dead token must be named)'
                     when jsonb_typeof(e.v->'retry_after_s') not in ('number', 'null')
                       then 'retry_after_s is not a number' end)
    into v_bad
  from jsonb_array_elements(p_results) with ordinality as e(v, i)
  where jsonb_typeof(e.v) <> 'object' or e.v->>'queue_id' is null
     or e.v->>'queue_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
     or coalesce(e.v->>'outcome', '') not in ('delivered', 'retry', 'token_dead', 'config_fault', 'our_bug')
     or (e.v->>'outcome' = 'token_dead' and e.v->>'token' is null)
     or jsonb_typeof(e.v->'retry_after_s') not in ('number', 'null')
  order by e.i limit 1;
  if v_bad is not null then
    raise exception '%', v_bad using errcode = '22023';
  end if;

  -- Compare-and-set on the lease: only rows this worker still holds, within its lease.
  -- The ids as an array, so that they are looked up in the primary key whatever the statistics
  -- say. Right after a burst is claimed, the statistics still count almost no `claimed` row,
  -- and `q.id in (select ... from jsonb_array_elements(...))` was planned as a nested loop of
  -- every claimed row against every id: 10,000 x 1,000 comparisons, 5-14 s per call.
  select coalesce(array_agg(x.id), '{}') into v_mine from (
    select q.id from public.notification_queue q
    where q.id = any (array(select (e->>'queue_id')::uuid
                            from jsonb_array_elements(p_results) e))
      and q.status = 'claimed' and q.locked_by = p_worker and q.locked_until >= p_now
    for update of q) x;

  with r as materialized (
    select x.*, q.call_session_id as session_id, q.deadline_at, q.device_id, q.platform,
           left(concat_ws(' ', x.provider, nullif(x.status, 0)::text, x.reason)
                || coalesce(': ' || x.detail, ''), 2000) as error,
           make_interval(secs => greatest(coalesce(x.retry_after_s, 0),
                                          case when x.outcome = 'config_fault' then 10 else 0 end))
             as delay
    from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text, provider text,
                                            token text, status integer, reason text,
                                            message_id text, retry_after_s double precision,
                                            detail text)
    join public.notification_queue q on q.id = x.queue_id
    where x.queue_id = any (v_mine)
  ),
  sent as (
    update public.notification_queue q
       set status = 'sent', sent_at = p_now, provider_message_id = r.message_id,
           locked_by = null, locked_until = null, next_attempt_at = null
      from r
     where q.id = r.queue_id and r.outcome = 'delivered'
  ),
  ringing as (
    update public.call_sessions c
       set status = 'ringing', ringing_at = p_now, device_id = r.device_id
      from r
     where c.id = r.session_id and r.outcome = 'delivered' and c.status = 'queued'
  ),
  again as (
    update public.notification_queue q
       set status = 'due', next_attempt_at = p_now + r.delay, last_error = r.error,
           locked_by = null, locked_until = null
      from r
     where q.id = r.queue_id and r.outcome in ('retry', 'config_fault')
       and p_now + r.delay <= r.deadline_at
  ),
  too_late as (
    update public.notification_queue q
       set status = 'expired', last_error = r.error || ' (the next try would be past the deadline)',
           locked_by = null, locked_until = null
      from r
     where q.id = r.queue_id and r.outcome in ('retry', 'config_fault')
       and p_now + r.delay > r.deadline_at
  ),
  too_late_sessions as (
    update public.call_sessions c
       set status = 'expired', ended_at = p_now,
           failure_reason = 'the push could not be sent before its deadline: ' || r.error
      from r
     where c.id = r.session_id and r.outcome in ('retry', 'config_fault')
       and p_now + r.delay > r.deadline_at and c.status = 'queued'
    returning c.id, c.household_id, c.relative_id, c.device_id, c.occurrence_at
  ),
  too_late_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               message, dedupe_key)
    select s.household_id, s.relative_id, s.id, s.device_id, 'call_expired',
           format('%s''s call at %s could not be sent in time', rel.display_name,
                  to_char(s.occurrence_at at time zone rel.timezone, 'Dy DD Mon HH24:MI')),
           'call_expired:' || s.id
    from too_late_sessions s join public.relatives rel on rel.id = s.relative_id
    on conflict (dedupe_key) do nothing
  ),
  config_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, details, dedupe_key)
    select c.household_id, c.relative_id, c.id, r.device_id, 'provider_config', 'critical',
           format('Calls to %s cannot be sent: the push service refused our configuration (%s)',
                  rel.display_name, r.error),
           jsonb_build_object('provider', r.provider, 'status', r.status, 'reason', r.reason),
           'provider_config:' || c.id
    from r
    join public.call_sessions c on c.id = r.session_id
    join public.relatives rel on rel.id = c.relative_id
    where r.outcome = 'config_fault'
    on conflict (dedupe_key) do nothing
  ),
  bug as (
    update public.notification_queue q
       set status = 'failed', last_error = r.error, locked_by = null, locked_until = null
      from r
     where q.id = r.queue_id and r.outcome = 'our_bug'
  ),
  bug_sessions as (
    update public.call_sessions c
       set status = 'failed', ended_at = p_now, failure_reason = 'the push was refused: ' || r.error
      from r
     where c.id = r.session_id and r.outcome = 'our_bug' and c.status = 'queued'
    returning c.id, c.household_id, c.relative_id, c.device_id, c.attempt
  ),
  bug_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               severity, message, dedupe_key)
    select s.household_id, s.relative_id, s.id, s.device_id, 'call_failed', 'critical',
           format('%s could not be called (attempt %s): the push service refused the call',
                  rel.display_name, s.attempt),
           'failed:' || s.id
    from bug_sessions s join public.relatives rel on rel.id = s.relative_id
    on conflict (dedupe_key) do nothing
  ),
  -- A dead token is marked on its device, once per device and token, and only while the
  -- device still has that token (a token refreshed meanwhile is not touched).
  dead as (
    select distinct on (r.device_id, r.provider) r.device_id, r.provider, r.token,
           left(coalesce(r.reason, 'token refused') || coalesce(' (' || r.provider || ' '
                || nullif(r.status, 0)::text || ')', ''), 500) as why
    from r where r.outcome = 'token_dead' and r.device_id is not null
    order by r.device_id, r.provider
  )
  update public.device_pairs d
     set voip_token_invalidated_at = case when dead.provider = 'apns' and d.voip_token = dead.token
                                            then coalesce(d.voip_token_invalidated_at, p_now)
                                          else d.voip_token_invalidated_at end,
         voip_token_invalid_reason = case when dead.provider = 'apns' and d.voip_token = dead.token
                                            then coalesce(d.voip_token_invalid_reason, dead.why)
                                          else d.voip_token_invalid_reason end,
         fcm_token_invalidated_at = case when dead.provider = 'fcm' and d.fcm_token = dead.token
                                           then coalesce(d.fcm_token_invalidated_at, p_now)
                                         else d.fcm_token_invalidated_at end,
         fcm_token_invalid_reason = case when dead.provider = 'fcm' and d.fcm_token = dead.token
                                           then coalesce(d.fcm_token_invalid_reason, dead.why)
                                         else d.fcm_token_invalid_reason end
    from dead
   where d.id = dead.device_id;

  -- After a dead token: the relative's current target (which no longer offers the dead token)
  -- is tried at once; with none left, the call fails and the family is told.
  with r as materialized (
    select x.queue_id, x.provider as dead_provider, x.token as dead_token,
           left(concat_ws(' ', x.provider, nullif(x.status, 0)::text, x.reason)
                || coalesce(': ' || x.detail, ''), 2000) as error,
           c.id as session_id, c.relative_id,
           t.device_id, t.platform, t.provider, t.push_token, t.fallback_provider, t.fallback_token,
           coalesce(private.unreachable_reason(t.device_id, t.provider),
                    case when t.provider = x.provider and t.push_token = x.token
                           then 'the only push token was refused' end) as reason
    from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text, provider text,
                                            token text, status integer, reason text, detail text)
    join public.notification_queue q on q.id = x.queue_id
    join public.call_sessions c on c.id = q.call_session_id
    left join private.call_targets t on t.relative_id = c.relative_id
    where x.queue_id = any (v_mine) and x.outcome = 'token_dead'
  ),
  fallback as (
    update public.notification_queue q
       set status = 'due', next_attempt_at = p_now, locked_by = null, locked_until = null,
           device_id = r.device_id, platform = r.platform, provider = r.provider,
           push_token = r.push_token, fallback_provider = r.fallback_provider,
           fallback_token = r.fallback_token,
           last_error = r.error || ' (token invalidated; trying ' || r.provider || ')'
      from r
     where q.id = r.queue_id and r.reason is null
  ),
  none_left as (
    update public.notification_queue q
       set status = 'failed', locked_by = null, locked_until = null,
           last_error = r.error || ' (token invalidated; no other token)'
      from r
     where q.id = r.queue_id and r.reason is not null
  ),
  none_left_sessions as (
    update public.call_sessions c
       set status = 'failed', ended_at = p_now,
           failure_reason = 'the device''s push token is no longer valid (' || r.error || ')'
      from r
     where c.id = r.session_id and r.reason is not null and c.status = 'queued'
    returning c.id, c.household_id, c.relative_id, c.device_id, c.attempt
  )
  insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                             severity, message, dedupe_key)
  select s.household_id, s.relative_id, s.id, s.device_id, 'invalid_token', 'critical',
         format('%s could not be called (attempt %s): their phone''s push token is no longer '
                'valid. Open the CallPanion app on their phone to register it again.',
                rel.display_name, s.attempt),
         'failed:' || s.id
  from none_left_sessions s join public.relatives rel on rel.id = s.relative_id
  on conflict (dedupe_key) do nothing;

  return query
  select x.queue_id, q.call_session_id,
         case when not (x.queue_id = any (v_mine)) then 'lost_lease'
              when q.status = 'sent' then 'sent'
              when q.status = 'due' and x.outcome = 'token_dead' then 'fallback'
              when q.status = 'due' then 'retry'
              else q.status end
  from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text)
  left join public.notification_queue q on q.id = x.queue_id;
end
$$;

-- Extend the leases of rows still being sent (a slow provider); returns the rows renewed.
create or replace function public.renew_leases(
  p_worker text, p_ids uuid[], p_lease interval default interval '30 seconds',
  p_now timestamptz default now())
returns setof uuid
language plpgsql
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, p_lease);
  return query
  update public.notification_queue q
     set locked_until = p_now + p_lease
   where q.id = any (p_ids) and q.status = 'claimed' and q.locked_by = p_worker
     and q.locked_until >= p_now
  returning q.id;
end
$$;

-- Give back claimed rows that were not sent (shutdown, or a send that never started): due
-- again at once for another worker, the claim not counted as a provider attempt. All of
-- the worker's rows when p_ids is null. Returns the rows released.
create or replace function public.release_leases(p_worker text, p_ids uuid[] default null)
returns setof uuid
language plpgsql
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, null);
  return query
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null,
         provider_attempts = greatest(q.provider_attempts - 1, 0)
   where q.status = 'claimed' and q.locked_by = p_worker
     and (p_ids is null or q.id = any (p_ids))
  returning q.id;
end
$$;

-- When the worker should next look: the earliest time a row may be claimed, and the earliest
-- lease to run out (a dead worker's rows are taken over then). Null when there is none. Rows
-- past their deadline are phase 2's to expire, not the worker's to wait for.
create or replace function public.next_work_at(p_now timestamptz default now())
returns table (send_at timestamptz, lease_expires_at timestamptz)
language sql stable
set search_path = ''
as $$
  select (select min(coalesce(q.next_attempt_at, q.send_at)) from public.notification_queue q
          where q.status in ('queued', 'due') and q.deadline_at >= p_now),
         (select min(q.locked_until) from public.notification_queue q where q.status = 'claimed')
$$;

-- Rows by status for the worker's /metrics (the live statuses only: finished rows pile up
-- until retention, and counting them would scan the table on every scrape).
create or replace function public.queue_depth()
returns table (status text, rows bigint)
language sql stable
set search_path = ''
as $$
  select s.status, (select count(*) from public.notification_queue q where q.status = s.status)
  from unnest(array['queued', 'due', 'claimed']) as s(status)
$$;

revoke all on function public.claim_due_calls(text, integer, interval, timestamptz, interval),
  public.record_push_results(text, jsonb, timestamptz),
  public.renew_leases(text, uuid[], interval, timestamptz),
  public.release_leases(text, uuid[]), public.next_work_at(timestamptz), public.queue_depth()
  from public, anon, authenticated;
grant execute on function public.claim_due_calls(text, integer, interval, timestamptz, interval),
  public.record_push_results(text, jsonb, timestamptz),
  public.renew_leases(text, uuid[], interval, timestamptz),
  public.release_leases(text, uuid[]), public.next_work_at(timestamptz), public.queue_depth()
  to service_role;
