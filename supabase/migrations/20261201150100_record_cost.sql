-- Issue 23: recording a batch of 100 push results cost ~120 ms (10,000 shared buffers) on
-- an empty machine (`callpanion bench claim-cost`), 1.2 ms a call, paid by the database for
-- every push of a burst. Two statements made most of it:
--
-- - private.settle_ring_windows joined the results (jsonb_to_recordset, which the planner
--   takes for one row) with the sessions in a nested loop: every session against every
--   result, each compared with every id of p_mine (100 x 100 x 100 comparisons, ~80 ms).
--   The ids are now taken out of the results once, as arrays, and looked up by key; and the
--   ringing sessions are dated from their ring window by record_push_results itself, so
--   they are not updated twice.
-- - the dead-token fallback of record_push_results ran (and joined every result with the
--   relative's current target) even when no token was refused: now only when one was.

-- As 20261126210000_crash_recovery.sql, same effect: the delivered and the refused ids as
-- arrays first, then two updates by primary key; a session whose ringing_at is already the
-- start of its window (record_push_results below dates it so) is not written again.
create or replace function private.settle_ring_windows(
  p_results jsonb, p_mine uuid[], p_now timestamptz)
returns void
language plpgsql
set search_path = ''
as $$
declare
  v_delivered uuid[];
  v_refused uuid[];
begin
  select coalesce(array_agg(x.queue_id) filter (where x.outcome = 'delivered'), '{}'),
         coalesce(array_agg(x.queue_id) filter (where x.outcome <> 'delivered'
                                                  and coalesce(x.status, 0) > 0), '{}')
    into v_delivered, v_refused
  from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text, status integer)
  where x.queue_id = any (p_mine);
  if cardinality(v_delivered) > 0 then
    update public.call_sessions c
       set ringing_at = least(c.ringing_at, q.ring_expires_at - c.ring_timeout)
      from public.notification_queue q
     where q.id = any (v_delivered) and q.status = 'sent' and c.id = q.call_session_id
       and c.status = 'ringing' and c.ringing_at = p_now and q.ring_expires_at is not null
       and q.ring_expires_at - c.ring_timeout < c.ringing_at;  -- else: nothing to change
  end if;
  if cardinality(v_refused) > 0 then
    update public.notification_queue q
       set ring_expires_at = null
     where q.id = any (v_refused) and q.status = 'due';
  end if;
end
$$;

-- Record a batch of push results: exactly as 20261126210000_crash_recovery.sql, except that
-- a delivered push dates ringing_at from the start of its ring window in the same update
-- that makes the session ringing, and the dead-token fallback statement runs only when the
-- batch has a dead token.
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
           q.ring_expires_at,
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
       -- Dated from the start of its ring window at once (was a second update of the same
       -- rows in settle_ring_windows: the same value, twice the writes).
       set status = 'ringing', device_id = r.device_id,
           ringing_at = case when r.ring_expires_at is null then p_now
                             else least(p_now, r.ring_expires_at - c.ring_timeout) end
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

  -- Issue 23: only when a token was refused (the statement below costs ~0.2 ms a row
  -- even when none was: it joins every result with the relative's current target).
  if exists (select 1 from jsonb_array_elements(p_results) e
             where e->>'outcome' = 'token_dead') then
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
  end if;

  -- Issue 14: the ring window follows the answer (see private.settle_ring_windows).
  perform private.settle_ring_windows(p_results, v_mine, p_now);

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
