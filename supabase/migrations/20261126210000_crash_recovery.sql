-- Crash recovery (issue 14): a dead worker's rows come back at once, a re-send is the same
-- call, and timeouts are acted on at the worker's pace.
--
-- Presence. Each worker process holds a session-level advisory lock named after its lease
-- owner (`register_worker`) on a connection of its own for as long as it runs. Postgres drops
-- that lock the moment the session ends (the process was killed, the host died), so a row
-- claimed under a held lock whose lock is gone is reclaimed by the next claim of any worker
-- (`private.reclaim_orphaned_leases`), without waiting for `locked_until`. The lease stays as
-- the backstop for a hung but connected worker, and for rows claimed by a caller that holds
-- no presence lock (a script, an older worker): those keep the plain lease semantics.
-- After a Postgres restart every lock is gone at once, while the workers are still
-- reconnecting: rows claimed before the server started are left to their lease, so a restart
-- does not turn every in-flight row into a duplicate.
--
-- Ring window. The first claim of a row fixes when its phone stops ringing
-- (`ring_expires_at` = when the push is due + the session's ring timeout); every re-send of
-- the row carries that same `expires_at` and rings only for what is left. A provider answer
-- that proves the push did not reach the phone (an HTTP error, a release before sending)
-- clears it, so the next attempt gets a whole window; a lost answer (crash, dropped
-- connection) keeps it, because the phone may already be ringing. A delivered push dates the
-- session's `ringing_at` from the start of that window, so phase 2 times the ring out when
-- the phone does.

alter table public.notification_queue
  -- When the row was claimed by a worker holding its presence lock (null otherwise): the row
  -- may be reclaimed as soon as that lock is gone.
  add column presence_claimed_at timestamptz,
  -- The end of the ring window, fixed at the first claim: the payload's expires_at.
  add column ring_expires_at timestamptz;

-- The advisory-lock key space of worker presence (two-key form: this, then the owner's hash).
create or replace function private.worker_lock_space()
returns integer
language sql immutable
set search_path = ''
as $$ select 1129334871 $$;  -- 'CPLW'

create or replace function private.worker_lock_key(p_worker text)
returns integer
language sql immutable
set search_path = ''
as $$ select hashtext(p_worker) $$;

-- The presence-lock keys held right now in this database (as pg_locks shows them: unsigned).
create or replace function private.live_worker_keys()
returns bigint[]
language sql stable
set search_path = ''
as $$
  select coalesce(array_agg(l.objid::text::bigint), '{}')
  from pg_catalog.pg_locks l
  where l.locktype = 'advisory' and l.granted and l.objsubid = 2
    and l.classid::text::bigint = private.worker_lock_space()
    and l.database = (select d.oid from pg_catalog.pg_database d
                      where d.datname = pg_catalog.current_database())
$$;

create or replace function private.worker_is_live(p_worker text, p_live bigint[])
returns boolean
language sql immutable
set search_path = ''
as $$
  select (private.worker_lock_key(p_worker)::bigint & 4294967295) = any (p_live)
$$;

-- Take this session's presence lock for lease owner p_worker. False when another session
-- holds it (another process uses that owner name). Call it on a connection that stays open
-- while the worker runs; the lock ends with that session.
create or replace function public.register_worker(p_worker text)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, null);
  if exists (select 1 from pg_catalog.pg_locks l
             where l.locktype = 'advisory' and l.granted and l.objsubid = 2
               and l.pid = pg_catalog.pg_backend_pid()
               and l.classid::text::bigint = private.worker_lock_space()
               and l.objid::text::bigint
                   = (private.worker_lock_key(p_worker)::bigint & 4294967295)) then
    return true;  -- already ours: asking again does not stack the lock
  end if;
  return pg_catalog.pg_try_advisory_lock(private.worker_lock_space(),
                                         private.worker_lock_key(p_worker));
end
$$;

-- Rows whose owner's presence lock is gone (its database session ended) go back to the queue
-- at once. Only rows claimed under a held lock since this server started. Returns the rows.
-- Phase 2 (release_due_calls) may call this too, before it returns expired leases.
create or replace function private.reclaim_orphaned_leases()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_live bigint[];
  v_rows integer;
begin
  if not exists (select 1 from public.notification_queue q
                 where q.status = 'claimed' and q.presence_claimed_at is not null) then
    return 0;
  end if;
  v_live := private.live_worker_keys();
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null, presence_claimed_at = null,
         last_error = left(coalesce(q.last_error || '; ', '') || 'worker ' || q.locked_by
                           || ' is gone (its database session ended)', 2000)
   where q.id in (select e.id from public.notification_queue e
                  where e.status = 'claimed'
                    and e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()
                    and not private.worker_is_live(e.locked_by, v_live)
                  for update skip locked);
  get diagnostics v_rows = row_count;
  return v_rows;
end
$$;

-- Claim, as before, plus: orphaned leases come back first; rows past their deadline, or whose
-- fixed ring window is over, are expired here by the worker that would have sent them (as
-- phase 2 would, same alert); the first claim fixes ring_expires_at and every claim returns it.
drop function public.claim_due_calls(text, integer, interval, timestamptz, interval);
create function public.claim_due_calls(
  p_worker text,
  p_limit integer default 500,
  p_lease interval default interval '30 seconds',
  p_now timestamptz default now(),
  p_horizon interval default interval '0 seconds')
returns table (
  queue_id uuid, call_session_id uuid, household_id uuid, relative_id uuid, attempt smallint,
  provider_attempts integer, device_id uuid, platform text, provider text, push_token text,
  send_at timestamptz, not_before timestamptz, deadline_at timestamptz, payload jsonb,
  locked_until timestamptz, ring_expires_at timestamptz)
language plpgsql
set jit = off
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_present timestamptz;
begin
  perform private.check_worker_args(p_worker, p_limit, p_lease);
  if p_horizon is null or p_horizon < interval '0 seconds' or p_horizon > interval '1 minute' then
    raise exception 'invalid p_horizon: % is not between 0 and 1 minute', p_horizon
      using errcode = '22023';
  end if;
  -- Rows claimed by a worker holding its presence lock can be reclaimed once it is gone.
  if private.worker_is_live(p_worker, private.live_worker_keys()) then
    v_present := now();  -- the real clock: compared with the server's start time
  end if;

  perform private.reclaim_orphaned_leases();
  -- Leases that ran out (a worker hung, or held no presence lock) return at once too.
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null, presence_claimed_at = null,
         last_error = left(coalesce(q.last_error || '; ', '') || 'lease of ' || q.locked_by
                           || ' expired', 2000)
   where q.id in (select e.id from public.notification_queue e
                  where e.status = 'claimed' and e.locked_until < p_now
                  for update skip locked);

  return query
  with ready as materialized (
    select q.id, q.call_session_id, s.status as session_status, s.household_id as s_household,
           s.relative_id as s_relative, s.attempt as s_attempt, s.ring_timeout as s_ring,
           s.occurrence_at as s_occurrence,
           t.device_id as t_device, t.platform as t_platform, t.provider as t_provider,
           t.push_token as t_token, t.fallback_provider as t_fallback_provider,
           t.fallback_token as t_fallback_token,
           private.unreachable_reason(t.device_id, t.provider) as reason,
           case when q.deadline_at < p_now then 'deadline'
                when q.ring_expires_at <= p_now then 'ring_window' end as overdue
    from public.notification_queue q
    join public.call_sessions s on s.id = q.call_session_id
    left join private.call_targets t on t.relative_id = s.relative_id
    where q.status in ('queued', 'due')
      and coalesce(q.next_attempt_at, q.send_at) <= p_now + p_horizon
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
  overdue_rows as (
    update public.notification_queue q
       set status = 'expired',
           last_error = coalesce(q.last_error || '; ', '')
                        || case r.overdue when 'deadline' then 'deadline passed before sending'
                             else 'the ring window of the first send ended before it could be'
                                  ' sent again' end
      from ready r
     where q.id = r.id and r.session_status = 'queued' and r.overdue is not null
  ),
  overdue_sessions as (
    update public.call_sessions c
       set status = 'expired', ended_at = p_now,
           failure_reason = coalesce(c.failure_reason,
                                     'the push could not be sent before its deadline')
      from ready r
     where c.id = r.call_session_id and c.status = 'queued' and r.overdue is not null
    returning c.id, c.household_id, c.relative_id, c.device_id, c.occurrence_at
  ),
  overdue_alerts as (
    insert into public.alerts (household_id, relative_id, call_session_id, device_id, kind,
                               message, dedupe_key)
    select s.household_id, s.relative_id, s.id, s.device_id, 'call_expired',
           format('%s''s call at %s could not be sent in time', rel.display_name,
                  to_char(s.occurrence_at at time zone rel.timezone, 'Dy DD Mon HH24:MI')),
           'call_expired:' || s.id
    from overdue_sessions s join public.relatives rel on rel.id = s.relative_id
    on conflict (dedupe_key) do nothing
  ),
  unreachable_rows as (
    update public.notification_queue q
       set status = 'failed', last_error = 'not sent: ' || r.reason
      from ready r
     where q.id = r.id and r.session_status = 'queued' and r.overdue is null
       and r.reason is not null
  ),
  unreachable_sessions as (
    update public.call_sessions c
       set status = 'failed', failure_reason = r.reason, ended_at = p_now
      from ready r
     where c.id = r.call_session_id and c.status = 'queued' and r.overdue is null
       and r.reason is not null
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
           presence_claimed_at = v_present,
           ring_expires_at = coalesce(q.ring_expires_at,
                                      greatest(p_now, coalesce(q.next_attempt_at, q.send_at))
                                      + r.s_ring),
           provider_attempts = q.provider_attempts + 1,
           device_id = r.t_device, platform = r.t_platform, provider = r.t_provider,
           push_token = r.t_token, fallback_provider = r.t_fallback_provider,
           fallback_token = r.t_fallback_token
      from ready r
     where q.id = r.id and r.session_status = 'queued' and r.overdue is null
       and r.reason is null
    returning q.id, q.call_session_id, r.s_household, r.s_relative, r.s_attempt,
              q.provider_attempts, q.device_id, q.platform, q.provider, q.push_token, q.send_at,
              coalesce(q.next_attempt_at, q.send_at), q.deadline_at, q.payload, q.locked_until,
              q.ring_expires_at
  )
  select * from claimed c order by c.send_at;
end
$$;

-- The ring window's end follows the answer: cleared when the provider's answer proves the
-- push did not reach the phone (an HTTP status: refused, retry later, dead token), kept when
-- the answer was lost (status 0: a dropped connection, an exception). And a delivered push
-- dates the session's ringing_at from the start of its window.
create or replace function private.settle_ring_windows(
  p_results jsonb, p_mine uuid[], p_now timestamptz)
returns void
language sql
set search_path = ''
as $$
  update public.call_sessions c
     set ringing_at = least(c.ringing_at, q.ring_expires_at - c.ring_timeout)
    from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text)
    join public.notification_queue q on q.id = x.queue_id
   where x.outcome = 'delivered' and x.queue_id = any (p_mine) and q.status = 'sent' and c.id = q.call_session_id
     and c.status = 'ringing' and c.ringing_at = p_now and q.ring_expires_at is not null;
  update public.notification_queue q
     set ring_expires_at = null
    from jsonb_to_recordset(p_results) as x(queue_id uuid, outcome text, status integer)
   where q.id = x.queue_id and x.queue_id = any (p_mine) and q.status = 'due'
     and x.outcome <> 'delivered' and coalesce(x.status, 0) > 0;
$$;

-- Record a batch of push results: exactly as 20261124200100_dispatch.sql, then the ring
-- windows are settled.
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

-- Give back claimed rows that were not sent: as before, and their ring window is cleared
-- (nothing reached the phone).
create or replace function public.release_leases(p_worker text, p_ids uuid[] default null)
returns setof uuid
language plpgsql
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, null);
  return query
  update public.notification_queue q
     set status = 'due', locked_by = null, locked_until = null, presence_claimed_at = null,
         ring_expires_at = case when q.provider_attempts <= 1 then null else q.ring_expires_at end,
         provider_attempts = greatest(q.provider_attempts - 1, 0)
   where q.status = 'claimed' and q.locked_by = p_worker
     and (p_ids is null or q.id = any (p_ids))
  returning q.id;
end
$$;

-- When the worker should next look: the earliest row to claim, the earliest lease to run out,
-- the earliest ring window to end (phase 2 then marks the call missed), and whether another
-- live owner holds rows (its death is noticed by looking again soon).
drop function public.next_work_at(timestamptz);
create function public.next_work_at(p_now timestamptz default now(), p_worker text default null)
returns table (send_at timestamptz, lease_expires_at timestamptz, ring_ends_at timestamptz,
               peer_leases boolean)
language sql stable
set search_path = ''
as $$
  select (select min(coalesce(q.next_attempt_at, q.send_at)) from public.notification_queue q
          where q.status in ('queued', 'due')),
         (select min(q.locked_until) from public.notification_queue q where q.status = 'claimed'),
         (select min(c.ringing_at + c.ring_timeout) from public.call_sessions c
          where c.status = 'ringing'),
         exists (select 1 from public.notification_queue q
                 where q.status = 'claimed' and q.presence_claimed_at is not null
                   and q.locked_by is distinct from p_worker)
$$;

-- Phase 2 at the worker's pace: a worker runs release_due_calls when a ring window ends (or a
-- lease runs out), rather than waiting for pg_cron's minute. One at a time: a worker that
-- finds another running it returns null at once.
create or replace function public.run_phase2_now(p_now timestamptz default now())
returns integer
language plpgsql
set search_path = ''
as $$
begin
  if not pg_catalog.pg_try_advisory_xact_lock(private.worker_lock_space(), 0) then
    return null;
  end if;
  return public.release_due_calls(p_now);
end
$$;

revoke all on function public.claim_due_calls(text, integer, interval, timestamptz, interval),
  public.next_work_at(timestamptz, text), public.register_worker(text),
  public.run_phase2_now(timestamptz)
  from public, anon, authenticated;
grant execute on function public.claim_due_calls(text, integer, interval, timestamptz, interval),
  public.next_work_at(timestamptz, text), public.register_worker(text),
  public.run_phase2_now(timestamptz)
  to service_role;
