-- Telling the family (issue 21), part 2: the functions. Tables: 20261201120000.
--
--   raise      an alert row is inserted (by any function) -> its chain is frozen and step 1's
--              outbox rows are written in the same transaction (trigger), NOTIFY 'outbox'
--   escalate   run_alert_escalations(p_now) (every claim_outbox, and pg_cron each minute):
--              a step whose time has come writes its rows; a step that reaches nobody (no
--              verified method) passes straight to the next
--   stop       the alert acknowledged (dashboard, link, SMS reply) or resolved (the relative
--              answered a later call): the chain stops, rows not yet sent are cancelled, and
--              on "answered" every member already told gets an all clear
--   deliver    claim_outbox / record_outbox_results / renew / release: the calls' machinery
--              (check_worker_args, presence locks and reclaim_orphaned_leases, lease
--              compare-and-set, the worker's RetryPolicy delay as retry_after_s)
--
-- Every function is SECURITY DEFINER where it touches private tables on behalf of the
-- service role or a member, and checks who the caller is itself.

-- Small helpers ----------------------------------------------------------------------------

create or replace function private.alert_is_critical(p_kind text) returns boolean
language sql immutable
set search_path = ''
as $$ select p_kind in ('missed_calls', 'concerning_content') $$;

create or replace function private.b64url(p_bytes bytea) returns text
language sql immutable strict
set search_path = ''
as $$ select rtrim(translate(encode(p_bytes, 'base64'), E'+/\n', '-_'), '=') $$;

-- base64url to bytes; null when it is not base64url.
create or replace function private.b64url_decode(p_text text) returns bytea
language plpgsql immutable strict
set search_path = ''
as $$
begin
  if p_text !~ '^[A-Za-z0-9_-]*$' then
    return null;
  end if;
  return decode(translate(p_text, '-_', '+/') || repeat('=', (4 - length(p_text) % 4) % 4), 'base64');
exception when others then
  return null;
end
$$;

create or replace function private.alert_key() returns bytea
language sql stable
set search_path = ''
as $$ select k.key from private.alert_link_keys k $$;

-- A link token: "<a|c>.<outbox id, base64url>.<expiry, unix seconds>.<signature>", the
-- signature the first 128 bits of HMAC-SHA256 under the server key of
-- "callpanion-alert-link:v1:<action>:<outbox id>:<expiry>", base64url. One expression with
-- the key passed in (no nested calls): a claim makes two tokens per row, and a redeem checks
-- one by making it again from its parts and comparing.
create or replace function private.alert_link_token(
  p_key bytea, p_action text, p_outbox_id uuid, p_exp bigint)
returns text
language sql immutable
set search_path = ''
as $$
  select concat_ws('.', p_action,
    rtrim(translate(encode(decode(replace(p_outbox_id::text, '-', ''), 'hex'), 'base64'),
                    E'+/\n', '-_'), '='),
    p_exp,
    rtrim(translate(encode(substring(extensions.hmac(
            convert_to(format('callpanion-alert-link:v1:%s:%s:%s', p_action, p_outbox_id, p_exp), 'UTF8'),
            p_key, 'sha256') from 1 for 16), 'base64'), E'+/\n', '-_'), '='))
$$;

-- HMAC of a verification code, salted by its method.
create or replace function private.contact_code_hash(p_method_id uuid, p_code text) returns text
language sql stable
set search_path = ''
as $$
  select encode(extensions.hmac(convert_to('contact-code:' || p_method_id::text || ':' || p_code, 'UTF8'),
                                private.alert_key(), 'sha256'), 'hex')
$$;

-- Where a member may see it: an address shown only in part.
create or replace function private.mask_address(p_channel text, p_address text) returns text
language sql immutable
set search_path = ''
as $$
  select case p_channel
    when 'email' then left(p_address, 1) || '•••@' || split_part(p_address, '@', 2)
    when 'sms' then left(p_address, 3) || '•••••' || right(p_address, 4)
    when 'webpush' then 'browser (' || split_part(split_part(p_address, '://', 2), '/', 1) || ')'
  end
$$;

-- The first instant at or after p_at outside the member's quiet hours [start, end) in p_zone.
create or replace function private.after_quiet_hours(
  p_at timestamptz, p_zone text, p_start time, p_end time)
returns timestamptz
language plpgsql immutable
set search_path = ''
as $$
declare
  v_local timestamp := p_at at time zone p_zone;
  v_time time := v_local::time;
  v_day date := v_local::date;
begin
  if p_start is null or p_end is null or p_start = p_end then
    return p_at;
  end if;
  if p_start < p_end then
    if v_time >= p_start and v_time < p_end then
      return private.local_to_instant(v_day + p_end, p_zone);
    end if;
  elsif v_time >= p_start then          -- wraps midnight: the evening part
    return private.local_to_instant(v_day + 1 + p_end, p_zone);
  elsif v_time < p_end then             -- the morning part
    return private.local_to_instant(v_day + p_end, p_zone);
  end if;
  return p_at;
end
$$;

-- Wake the workers (at commit): outbox rows are ready or soon will be.
create or replace function private.notify_outbox(p_count integer, p_earliest timestamptz)
returns void
language sql
set search_path = ''
as $$
  select pg_catalog.pg_notify(private.notify_channel(),
    json_build_object('event', 'outbox', 'count', p_count, 'earliest', p_earliest)::text)
  where p_count > 0
$$;

-- Writing an alert's rows -------------------------------------------------------------------

-- Write the outbox rows of steps of alerts (p_alert_ids[i] at step p_steps[i], its members
-- from the alert's frozen chain): every verified, enabled method of those members that
-- carries the alert's kind, held past the member's quiet hours unless the kind is critical
-- (and the member did not ask to hold those too). Set-based, so a burst of alerts raised in
-- one statement is one insert. Returns, for every item, the rows written.
create or replace function private.enqueue_alert_steps(
  p_alert_ids uuid[], p_steps integer[], p_now timestamptz)
returns table (alert_id uuid, step integer, written integer)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_deadline interval := (select s.alert_deadline from private.alert_settings s);
  v_rows integer;
  v_earliest timestamptz;
  v_counts jsonb;
begin
  with items as (
    select i.alert_id, i.step from unnest(p_alert_ids, p_steps) as i(alert_id, step)
  ),
  a as (
    select al.id, al.household_id, al.relative_id, al.kind, al.severity, al.message,
           al.created_at, i.step, e.steps_total,
           array(select u.value::uuid
                 from jsonb_array_elements_text(
                   e.chain -> ((i.step - 1) % greatest(jsonb_array_length(e.chain), 1))) u) as users,
           rel.display_name as relative_name, rel.timezone as relative_zone,
           h.name as household_name,
           al.kind in ('missed_calls', 'concerning_content') as critical
    from items i
    join private.alert_escalations e on e.alert_id = i.alert_id
    join public.alerts al on al.id = i.alert_id
    join public.households h on h.id = al.household_id
    left join public.relatives rel on rel.id = al.relative_id
    where al.acknowledged_at is null
  ),
  targets as (
    select m.id as method_id, m.user_id, m.channel, a.*, z.zone,
           case when a.critical and not coalesce(st.quiet_hours_hold_critical, false) then p_now
                else private.after_quiet_hours(p_now, z.zone, st.quiet_start, st.quiet_end) end
             as go_at,
           to_char(a.created_at at time zone z.zone, 'Dy DD Mon YYYY HH24:MI') as local_at
    from a
    join public.contact_methods m on m.household_id = a.household_id and m.user_id = any (a.users)
    left join public.member_alert_settings st
      on st.household_id = m.household_id and st.user_id = m.user_id
    cross join lateral (select coalesce(st.timezone, a.relative_zone, 'UTC') as zone) z
    where m.verified_at is not null and m.disabled_at is null
      and (m.kinds is null or a.kind = any (m.kinds))
  ),
  written as (
    insert into private.outbox (kind, household_id, alert_id, user_id, method_id, channel, step,
                                payload, send_at, deadline_at)
    select 'alert', t.household_id, t.id, t.user_id, t.method_id, t.channel, t.step,
           jsonb_build_object(
             'kind', 'alert',
             'subject', left(case when t.step > 1 then 'Still unacknowledged: ' else '' end
                             || t.message, 200),
             'text', t.message || E'\nWhen: ' || t.local_at || ' (' || t.zone || ')'
                     || case when t.step > 1 then E'\nNobody has acknowledged this yet.' else '' end,
             'alert_kind', t.kind, 'severity', t.severity, 'critical', t.critical,
             'relative_id', t.relative_id, 'relative_name', t.relative_name,
             'household_name', t.household_name, 'member_name', null,
             'what', t.message, 'happened_at', t.created_at, 'happened_at_local', t.local_at,
             'member_timezone', t.zone, 'step', t.step, 'escalation_steps', t.steps_total),
           t.go_at, greatest(t.go_at, t.created_at + v_deadline)
    from targets t
    on conflict on constraint outbox_once do nothing
    returning alert_id, send_at
  ),
  counts as (
    select w.alert_id, count(*) as n, min(w.send_at) as first_at from written w group by w.alert_id
  )
  select coalesce(sum(c.n), 0), min(c.first_at), coalesce(jsonb_object_agg(c.alert_id::text, c.n), '{}')
    into v_rows, v_earliest, v_counts
  from counts c;
  perform private.notify_outbox(v_rows, v_earliest);
  return query
  select i.alert_id, i.step, coalesce((v_counts ->> i.alert_id::text)::integer, 0)
  from unnest(p_alert_ids, p_steps) as i(alert_id, step);
end
$$;

-- Reach the escalation's next step (and the ones after it, while a step reaches nobody), then
-- set when the following one is due. Returns the rows written.
create or replace function private.advance_escalation(p_alert_id uuid, p_now timestamptz)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_esc private.alert_escalations;
  v_rows integer := 0;
  v_written integer;
begin
  select e.* into v_esc from private.alert_escalations e
   where e.alert_id = p_alert_id and e.stopped_at is null for update;
  if v_esc.alert_id is null then
    return 0;
  end if;
  loop
    exit when v_esc.next_step > v_esc.steps_total;
    select w.written into v_written
      from private.enqueue_alert_steps(array[p_alert_id], array[v_esc.next_step], p_now) w;
    v_rows := v_rows + v_written;
    v_esc.next_step := v_esc.next_step + 1;
    exit when v_written > 0;
  end loop;
  update private.alert_escalations e
     set next_step = v_esc.next_step,
         next_step_at = case when v_esc.next_step <= v_esc.steps_total then p_now + v_esc.wait end
   where e.alert_id = p_alert_id;
  return v_rows;
end
$$;

-- Trigger (after an insert into alerts, once per statement): freeze each new alert's chain and
-- tell its step 1 now, all of the statement's alerts in one insert (phase 2 raises a burst in
-- one statement). A chain: the household's escalation_contacts by step, or the admins then
-- the other members; only step 1 for a kind the policy does not escalate. An alert the outbox
-- raised about itself (a provider refusing our configuration) is not messaged, so a broken
-- channel cannot feed on its own alerts.
create or replace function private.on_alerts_raised()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_now timestamptz := now();
  v_ids uuid[];
  v_alert uuid;
begin
  with fresh as (
    select n.id, n.household_id, n.kind from new_alerts n
    where n.acknowledged_at is null and not (n.details ? 'outbox_config')
  ),
  homes as (select distinct f.household_id from fresh f),
  custom as (
    select s.household_id, jsonb_agg(s.users order by s.step) as chain
    from (select c.household_id, c.step, jsonb_agg(c.user_id order by c.created_at, c.user_id) as users
          from public.escalation_contacts c join homes h on h.household_id = c.household_id
          group by c.household_id, c.step) s
    group by s.household_id
  ),
  fallback as (
    -- Nothing set: the admins, then the other members.
    select s.household_id, jsonb_agg(s.users order by s.step) as chain
    from (select m.household_id, case m.role when 'admin' then 1 else 2 end as step,
                 jsonb_agg(m.user_id order by m.created_at, m.user_id) as users
          from public.household_members m join homes h on h.household_id = m.household_id
          group by 1, 2) s
    group by s.household_id
  ),
  plans as (
    select f.id, f.household_id,
           coalesce(p.wait, interval '10 minutes') as wait,
           f.kind = any (coalesce(p.escalate_kinds, '{missed_calls,concerning_content}')) as escalates,
           coalesce(p.repeats, 0) as repeats,
           coalesce(c.chain, d.chain, '[]'::jsonb) as chain
    from fresh f
    left join public.escalation_policies p on p.household_id = f.household_id
    left join custom c on c.household_id = f.household_id
    left join fallback d on d.household_id = f.household_id
  ),
  frozen as (
    insert into private.alert_escalations (alert_id, household_id, chain, wait, repeats,
                                           steps_total, next_step, next_step_at)
    select x.id, x.household_id, x.chain, x.wait, x.repeats,
           jsonb_array_length(x.chain) * (x.repeats + 1), 2, null
    from (select pl.id, pl.household_id, pl.wait,
                 case when pl.escalates then pl.chain
                      else jsonb_build_array(coalesce(pl.chain -> 0, '[]'::jsonb)) end as chain,
                 case when pl.escalates then pl.repeats else 0 end as repeats
          from plans pl) x
    returning alert_id
  )
  select array_agg(fr.alert_id) into v_ids from frozen fr;
  if v_ids is null then
    return null;
  end if;
  -- Step 1 of them all at once; then when each next step is due.
  with w as (
    select * from private.enqueue_alert_steps(v_ids, array_fill(1, array[cardinality(v_ids)]), v_now)
  )
  update private.alert_escalations e
     set next_step_at = case when e.steps_total >= 2 then v_now + e.wait end
    from w
   where e.alert_id = w.alert_id and w.written > 0;
  -- A step 1 that reached nobody passes to the next step at once (rare: one at a time).
  for v_alert in
    select e.alert_id from private.alert_escalations e
     where e.alert_id = any (v_ids) and e.next_step = 2 and e.next_step_at is null
       and e.steps_total >= 2
       and not exists (select 1 from private.outbox o where o.alert_id = e.alert_id)
  loop
    perform private.advance_escalation(v_alert, v_now);
  end loop;
  return null;
end
$$;

create trigger alerts_tell_the_family after insert on public.alerts
  referencing new table as new_alerts
  for each statement execute function private.on_alerts_raised();

-- Escalation steps that are due: each is reached once (row lock, skip locked). Returns the
-- rows written. pg_cron runs it every minute; every claim_outbox runs it first.
create or replace function public.run_alert_escalations(p_now timestamptz default now())
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_alert uuid;
  v_rows integer := 0;
begin
  for v_alert in
    select e.alert_id from private.alert_escalations e
     where e.next_step_at <= p_now and e.stopped_at is null
     order by e.next_step_at
     for update skip locked
  loop
    v_rows := v_rows + private.advance_escalation(v_alert, p_now);
  end loop;
  return v_rows;
end
$$;

-- Stopping ----------------------------------------------------------------------------------

-- Trigger (after update of acknowledged_at on alerts): the chain stops for everyone; rows
-- not yet claimed are cancelled; when the alert was resolved because the relative answered,
-- every member already told (a row sent or being sent) gets one all clear per method.
create or replace function private.on_alert_closed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_reason text := case when new.details ? 'resolved' and new.acknowledged_by is null
                          then 'answered' else 'acknowledged' end;
  v_rows integer;
  v_earliest timestamptz;
begin
  update private.alert_escalations e
     set stopped_at = new.acknowledged_at, stop_reason = v_reason, next_step_at = null
   where e.alert_id = new.id and e.stopped_at is null;
  update private.outbox o
     set status = 'cancelled',
         last_error = 'not sent: ' || case v_reason when 'answered' then 'the relative answered a later call'
                                       else 'the alert was acknowledged' end
   where o.alert_id = new.id and o.kind = 'alert' and o.status = 'queued';
  if v_reason = 'answered' then
    with told as (
      select distinct on (o.method_id) o.method_id, o.user_id, o.channel, o.household_id,
             o.payload ->> 'relative_name' as relative_name, o.payload ->> 'member_timezone' as zone
      from private.outbox o
      join public.contact_methods m on m.id = o.method_id and m.disabled_at is null
      where o.alert_id = new.id and o.kind = 'alert' and o.status in ('sent', 'claimed')
      order by o.method_id, o.step
    ),
    written as (
      insert into private.outbox (kind, household_id, alert_id, user_id, method_id, channel, step,
                                  payload)
      select 'all_clear', t.household_id, new.id, t.user_id, t.method_id, t.channel, 0,
             jsonb_build_object(
               'kind', 'all_clear',
               'subject', left('All clear: ' || coalesce(t.relative_name, 'your relative')
                               || ' answered a call', 200),
               'text', 'All clear: ' || coalesce(t.relative_name, 'your relative')
                       || ' answered a call at '
                       || to_char(new.acknowledged_at at time zone coalesce(t.zone, 'UTC'),
                                  'Dy DD Mon YYYY HH24:MI')
                       || ' (' || coalesce(t.zone, 'UTC') || E').\nEarlier: ' || new.message,
               'alert_kind', new.kind, 'severity', new.severity,
               'critical', private.alert_is_critical(new.kind),
               'relative_id', new.relative_id, 'relative_name', t.relative_name,
               'what', new.message, 'happened_at', new.created_at,
               'resolved_at', new.acknowledged_at, 'member_timezone', t.zone, 'step', 0)
      from told t
      on conflict on constraint outbox_once do nothing
      returning send_at
    )
    select count(*), min(send_at) into v_rows, v_earliest from written;
    perform private.notify_outbox(v_rows, v_earliest);
  end if;
  return null;
end
$$;

create trigger alerts_stop_telling after update of acknowledged_at on public.alerts
  for each row when (old.acknowledged_at is null and new.acknowledged_at is not null)
  execute function private.on_alert_closed();

-- Trigger (at commit, after a call session is answered: connected, or completed after an answer): the
-- relative's open alerts that say she could not be reached are resolved, which stops their
-- escalation and sends the all clear. A worrying conversation (concerning_content) and our
-- own configuration faults (provider_config) are not resolved by a call.
create or replace function private.on_relative_answered()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.alerts a
     set acknowledged_at = now(),
         details = a.details || jsonb_build_object(
           'resolved', 'the relative answered a later call', 'resolved_by_session', new.id)
   where a.relative_id = new.relative_id and a.household_id = new.household_id
     and a.acknowledged_at is null
     and a.kind <> all ('{concerning_content,provider_config}'::text[])
     and a.created_at <= now();
  return null;
end
$$;

-- Deferred to the end of the transaction: the call-event path first closes the alerts of the
-- answered occurrence itself, with its own wording (private.withdraw_after_conversation);
-- this then resolves whatever else is still open.
create constraint trigger call_sessions_answered after update of status on public.call_sessions
  deferrable initially deferred
  for each row
  when (new.status is distinct from old.status
        and (new.status = 'in_progress'
             or (new.status = 'completed' and new.answered_at is not null
                 and old.status <> 'in_progress')))
  execute function private.on_relative_answered();

-- Delivery: the calls' machinery ---------------------------------------------------------

-- Orphaned leases, generalised (20261126210000_crash_recovery.sql): rows of a worker whose
-- presence lock is gone return at once, in the call queue and in the outbox alike. Phase 2,
-- claim_due_calls and claim_outbox all call this one function.
create or replace function private.reclaim_orphaned_leases()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_live bigint[];
  v_rows integer := 0;
  v_outbox integer := 0;
  v_calls boolean := exists (select 1 from public.notification_queue q
                             where q.status = 'claimed' and q.presence_claimed_at is not null);
  v_messages boolean := private.outbox_has_presence_claims();
begin
  if not v_calls and not v_messages then
    return 0;
  end if;
  v_live := private.live_worker_keys();
  if v_calls then
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
  end if;
  if v_messages then
    v_outbox := private.reclaim_orphaned_outbox(v_live);
  end if;
  return v_rows + v_outbox;
end
$$;

-- The outbox half of the above (SECURITY DEFINER: the outbox is private, and phase 2 runs as
-- the service role).
create or replace function private.outbox_has_presence_claims() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from private.outbox o
                 where o.status = 'claimed' and o.presence_claimed_at is not null)
$$;

create or replace function private.reclaim_orphaned_outbox(p_live bigint[]) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_rows integer;
begin
  update private.outbox o
     set status = 'queued', locked_by = null, locked_until = null, presence_claimed_at = null,
         last_error = left(coalesce(o.last_error || '; ', '') || 'worker ' || o.locked_by
                           || ' is gone (its database session ended)', 2000)
   where o.id in (select e.id from private.outbox e
                  where e.status = 'claimed'
                    and e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()
                    and not private.worker_is_live(e.locked_by, p_live)
                  for update skip locked);
  get diagnostics v_rows = row_count;
  return v_rows;
end
$$;

-- Claim up to p_limit outbox rows that may go now (p_kinds: only those kinds; null = all).
-- First, as claim_due_calls does: orphaned and expired leases return; then due escalation
-- steps are written; rows that must no longer go are cancelled or expired. Returns what the
-- worker needs to render and send each message (README "Telling the family").
create or replace function public.claim_outbox(
  p_worker text,
  p_limit integer default 100,
  p_lease interval default interval '30 seconds',
  p_now timestamptz default now(),
  p_kinds text[] default null)
returns table (
  outbox_id uuid, kind text, channel text, household_id uuid, alert_id uuid, user_id uuid,
  method_id uuid, step smallint, attempts integer, destination jsonb, message jsonb,
  send_at timestamptz, deadline_at timestamptz, locked_until timestamptz)
language plpgsql
security definer
set jit = off
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_present timestamptz;
  v_ttl interval := (select s.link_ttl from private.alert_settings s);
  v_key bytea := private.alert_key();
begin
  perform private.check_worker_args(p_worker, p_limit, p_lease);
  if private.worker_is_live(p_worker, private.live_worker_keys()) then
    v_present := now();  -- the real clock: compared with the server's start time
  end if;
  perform private.reclaim_orphaned_leases();
  update private.outbox o
     set status = 'queued', locked_by = null, locked_until = null, presence_claimed_at = null,
         last_error = left(coalesce(o.last_error || '; ', '') || 'lease of ' || o.locked_by
                           || ' expired', 2000)
   where o.id in (select e.id from private.outbox e
                  where e.status = 'claimed' and e.locked_until < p_now
                  for update skip locked);
  perform public.run_alert_escalations(p_now);

  return query
  with ready as materialized (
    select o.id,
           case when o.kind in ('alert', 'all_clear') and m.id is null then 'the contact method was removed'
                when o.kind in ('alert', 'all_clear') and m.disabled_at is not null
                  then 'the contact method is disabled: ' || m.disabled_reason
                when o.kind in ('alert', 'all_clear') and m.verified_at is null
                  then 'the contact method is not verified'
                when o.kind = 'alert' and a.acknowledged_at is not null
                  then 'the alert was acknowledged'
                when o.kind = 'verification' and m.verified_at is not null
                  then 'the contact method is already verified'
           end as why_not,
           o.deadline_at < p_now as too_late,
           case m.channel
             when 'email' then jsonb_build_object('email', m.address)
             when 'sms' then jsonb_build_object('phone', m.address)
             when 'webpush' then jsonb_build_object('endpoint', m.address, 'keys',
                                   jsonb_build_object('p256dh', m.push_p256dh, 'auth', m.push_auth))
           end as destination
    from private.outbox o
    left join public.contact_methods m on m.id = o.method_id
    left join public.alerts a on a.id = o.alert_id
    where o.status = 'queued'
      and coalesce(o.next_attempt_at, o.send_at) <= p_now
      and (p_kinds is null or o.kind = any (p_kinds))
    order by coalesce(o.next_attempt_at, o.send_at)
    limit p_limit
    for update of o skip locked
  ),
  dropped as (
    update private.outbox o
       set status = case when r.why_not is not null then 'cancelled' else 'expired' end,
           last_error = left(coalesce(o.last_error || '; ', '')
                             || coalesce('not sent: ' || r.why_not, 'deadline passed before sending'), 2000),
           payload = o.payload - 'code'
      from ready r
     where o.id = r.id and (r.why_not is not null or r.too_late)
  ),
  claimed as (
    update private.outbox o
       set status = 'claimed', locked_by = p_worker, locked_until = p_now + p_lease,
           presence_claimed_at = v_present, attempts = o.attempts + 1
      from ready r
     where o.id = r.id and r.why_not is null and not coalesce(r.too_late, false)
    returning o.id, o.kind, o.channel, o.household_id, o.alert_id, o.user_id, o.method_id, o.step,
              o.attempts, r.destination,
              o.payload || case when o.kind = 'alert' then jsonb_build_object(
                  'ack_token', private.alert_link_token(v_key, 'a', o.id,
                                 floor(extract(epoch from o.created_at + v_ttl))::bigint),
                  'call_token', case when o.payload ->> 'relative_id' is not null
                                     then private.alert_link_token(v_key, 'c', o.id,
                                            floor(extract(epoch from o.created_at + v_ttl))::bigint) end,
                  'tokens_expire_at', o.created_at + v_ttl)
                else '{}'::jsonb end,
              coalesce(o.next_attempt_at, o.send_at) as go_at, o.deadline_at, o.locked_until
  )
  select * from claimed c order by c.go_at;
end
$$;

-- Record a batch of delivery results (a JSON array, one object per claimed row):
--   {"outbox_id", "outcome": delivered|retry|method_dead|config_fault|our_bug, "status",
--    "reason", "message_id", "retry_after_s", "detail"}
-- Returns per row: sent, retry, failed, disabled or lost_lease (compare-and-set on the lease,
-- as record_push_results).
create or replace function public.record_outbox_results(
  p_worker text, p_results jsonb, p_now timestamptz default now())
returns table (outbox_id uuid, result text)
language plpgsql
security definer
set jit = off
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_mine uuid[];
  v_bad text;
  v_max integer := (select s.max_attempts from private.alert_settings s);
  v_sid text;
  v_status text;
  v_code text;
  v_at timestamptz;
begin
  perform private.check_worker_args(p_worker, null, null);
  if p_results is null or jsonb_typeof(p_results) <> 'array' then
    raise exception 'invalid p_results: a JSON array of results is required' using errcode = '22023';
  end if;
  select format('invalid p_results[%s]: %s', e.i - 1,
                case when jsonb_typeof(e.v) <> 'object' then 'is not an object'
                     when e.v->>'outbox_id' is null then 'outbox_id is missing'
                     when e.v->>'outbox_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
                       then 'outbox_id is not a UUID'
                     when coalesce(e.v->>'outcome', '') not in
                            ('delivered', 'retry', 'method_dead', 'config_fault', 'our_bug')
                       then 'outcome is not one of delivered, retry, method_dead, config_fault, our_bug'
                     when jsonb_typeof(e.v->'status') not in ('number', 'null')
                       then 'status is not a number'
                     else 'retry_after_s is not a number' end)
    into v_bad
  from jsonb_array_elements(p_results) with ordinality as e(v, i)
  where jsonb_typeof(e.v) <> 'object' or e.v->>'outbox_id' is null
     or e.v->>'outbox_id' !~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
     or coalesce(e.v->>'outcome', '') not in ('delivered', 'retry', 'method_dead', 'config_fault', 'our_bug')
     or jsonb_typeof(e.v->'status') not in ('number', 'null')
     or jsonb_typeof(e.v->'retry_after_s') not in ('number', 'null')
  order by e.i limit 1;
  if v_bad is not null then
    raise exception '%', v_bad using errcode = '22023';
  end if;

  select coalesce(array_agg(x.id), '{}') into v_mine from (
    select o.id from private.outbox o
    where o.id = any (array(select (e->>'outbox_id')::uuid from jsonb_array_elements(p_results) e))
      and o.status = 'claimed' and o.locked_by = p_worker and o.locked_until >= p_now
    for update of o) x;

  with r as materialized (
    select distinct on (x.outbox_id) x.*, o.deadline_at, o.attempts, o.method_id,
           o.household_id, o.channel as o_channel,
           left(concat_ws(' ', o.channel, nullif(x.status, 0)::text, x.reason)
                || coalesce(': ' || x.detail, ''), 2000) as error,
           make_interval(secs => greatest(coalesce(x.retry_after_s, 0),
                                          case when x.outcome = 'config_fault' then 10 else 0 end))
             as delay
    from jsonb_to_recordset(p_results) as x(outbox_id uuid, outcome text, status integer,
                                            reason text, message_id text,
                                            retry_after_s double precision, detail text)
    join private.outbox o on o.id = x.outbox_id
    where x.outbox_id = any (v_mine)
    order by x.outbox_id
  ),
  done as (
    update private.outbox o
       set status = case
             when r.outcome = 'delivered' then 'sent'
             when r.outcome in ('retry', 'config_fault') and r.attempts < v_max
                  and (r.deadline_at is null or p_now + r.delay <= r.deadline_at) then 'queued'
             else 'failed' end,
           next_attempt_at = case when r.outcome in ('retry', 'config_fault') then p_now + r.delay
                                  else o.next_attempt_at end,
           sent_at = case when r.outcome = 'delivered' then p_now else o.sent_at end,
           provider_message_id = coalesce(r.message_id, o.provider_message_id),
           last_error = case
             when r.outcome = 'delivered' then o.last_error
             when r.outcome in ('retry', 'config_fault') and r.attempts >= v_max
               then r.error || format(' (gave up after %s attempts)', r.attempts)
             when r.outcome in ('retry', 'config_fault') and r.deadline_at is not null
                  and p_now + r.delay > r.deadline_at
               then r.error || ' (the next try would be past the deadline)'
             when r.outcome = 'method_dead' then r.error || ' (the contact method is disabled)'
             else r.error end,
           -- A code is kept only while it may still be sent.
           payload = case when r.outcome in ('retry', 'config_fault') and r.attempts < v_max
                          then o.payload else o.payload - 'code' end,
           locked_by = null, locked_until = null, presence_claimed_at = null
      from r
     where o.id = r.outbox_id
  ),
  dead as (
    update public.contact_methods m
       set disabled_at = coalesce(m.disabled_at, p_now),
           disabled_reason = coalesce(m.disabled_reason, left(r.error, 500))
      from r
     where m.id = r.method_id and r.outcome = 'method_dead'
    returning m.id
  ),
  others as (
    -- The method's other rows waiting to go would only fail the same way.
    update private.outbox o
       set status = 'cancelled', last_error = 'not sent: the contact method is disabled'
      from dead d
     where o.method_id = d.id and o.status = 'queued' and not (o.id = any (v_mine))
  )
  -- A configuration fault is the operators' to fix: the household is told once a day per
  -- channel, on the dashboard only (details.outbox_config keeps it out of the outbox).
  insert into public.alerts (household_id, kind, severity, message, details, dedupe_key)
  select distinct on (r.household_id, r.o_channel) r.household_id, 'provider_config', 'critical',
         format('Messages by %s cannot be sent: the provider refused our configuration (%s)',
                r.o_channel, r.error),
         jsonb_build_object('outbox_config', true, 'channel', r.o_channel, 'status', r.status,
                            'reason', r.reason),
         format('outbox_config:%s:%s:%s', r.household_id, r.o_channel, to_char(p_now at time zone 'UTC', 'YYYY-MM-DD'))
  from r where r.outcome = 'config_fault'
  order by r.household_id, r.o_channel
  on conflict (dedupe_key) do nothing;

  -- Status callbacks that overtook this record (see record_sms_status).
  for v_sid, v_status, v_code, v_at in
    delete from private.sms_status_pending p
     using private.outbox o
     where o.id = any (v_mine) and o.channel = 'sms' and o.provider_message_id = p.message_sid
    returning p.message_sid, p.status, p.error_code, p.received_at
  loop
    perform public.record_sms_status(v_sid, v_status, v_code, v_at);
  end loop;

  return query
  select x.outbox_id,
         case when not (x.outbox_id = any (v_mine)) then 'lost_lease'
              when x.outcome = 'method_dead' then 'disabled'
              when o.status = 'sent' then 'sent'
              when o.status = 'queued' then 'retry'
              else o.status end
  from jsonb_to_recordset(p_results) as x(outbox_id uuid, outcome text)
  left join private.outbox o on o.id = x.outbox_id;
end
$$;

-- Extend the leases of rows still being sent; returns the rows renewed.
create or replace function public.renew_outbox_leases(
  p_worker text, p_ids uuid[], p_lease interval default interval '30 seconds',
  p_now timestamptz default now())
returns setof uuid
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, p_lease);
  return query
  update private.outbox o
     set locked_until = p_now + p_lease
   where o.id = any (p_ids) and o.status = 'claimed' and o.locked_by = p_worker
     and o.locked_until >= p_now
  returning o.id;
end
$$;

-- Give back claimed rows that were not sent (shutdown): queued again at once, the claim not
-- counted as an attempt. All of the worker's rows when p_ids is null.
create or replace function public.release_outbox_leases(p_worker text, p_ids uuid[] default null)
returns setof uuid
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.check_worker_args(p_worker, null, null);
  return query
  update private.outbox o
     set status = 'queued', locked_by = null, locked_until = null, presence_claimed_at = null,
         attempts = greatest(o.attempts - 1, 0)
   where o.status = 'claimed' and o.locked_by = p_worker
     and (p_ids is null or o.id = any (p_ids))
  returning o.id;
end
$$;

-- When the outbox worker should next look: a row's send or retry time, a lease's end, an
-- escalation step. Null when nothing is pending.
create or replace function public.next_outbox_at(p_now timestamptz default now())
returns timestamptz
language sql stable
security definer
set search_path = ''
as $$
  select least(
    (select min(coalesce(o.next_attempt_at, o.send_at)) from private.outbox o where o.status = 'queued'),
    (select min(o.locked_until) from private.outbox o where o.status = 'claimed'),
    (select min(e.next_step_at) from private.alert_escalations e
      where e.next_step_at is not null and e.stopped_at is null))
$$;

-- Live outbox rows by kind, channel and status, for /metrics.
create or replace function public.outbox_depth()
returns table (kind text, channel text, status text, rows bigint)
language sql stable
security definer
set search_path = ''
as $$
  select o.kind, o.channel, o.status, count(*)
  from private.outbox o where o.status in ('queued', 'claimed')
  group by o.kind, o.channel, o.status
$$;

-- Acknowledging ------------------------------------------------------------------------------

-- A link from a message, without logging in (the API's route calls this as the service role).
-- The token is checked here: signature under the server key, expiry, single use. 'a'
-- acknowledges the alert as the member it was sent to; 'c' rings the relative now
-- (request_call_now), and a call refused by its rules does not use the link up.
create or replace function public.redeem_alert_link(p_token text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_parts text[] := string_to_array(coalesce(p_token, ''), '.');
  v_id_bytes bytea;
  v_id uuid;
  v_exp bigint;
  v_row private.outbox;
  v_alert public.alerts;
  v_session uuid;
  v_result jsonb;
  v_was_open boolean;
  v_claims text;
begin
  if cardinality(v_parts) <> 4 or v_parts[1] not in ('a', 'c') or v_parts[3] !~ '^[0-9]{1,12}$'
     or length(p_token) > 200 then
    raise exception 'invalid link token: malformed' using errcode = '28000';
  end if;
  v_id_bytes := private.b64url_decode(v_parts[2]);
  if v_id_bytes is null or length(v_id_bytes) <> 16 then
    raise exception 'invalid link token: malformed' using errcode = '28000';
  end if;
  v_id := encode(v_id_bytes, 'hex')::uuid;
  v_exp := v_parts[3]::bigint;
  if private.alert_link_token(private.alert_key(), v_parts[1], v_id, v_exp) is distinct from p_token then
    raise exception 'invalid link token: forged' using errcode = '28000';
  end if;
  if v_exp < extract(epoch from p_now) then
    raise exception 'invalid link token: expired' using errcode = '28000',
      hint = 'Open the dashboard to acknowledge the alert.';
  end if;
  select o.* into v_row from private.outbox o where o.id = v_id and o.kind = 'alert';
  if v_row.id is null then
    -- Signed by us, but its message is gone (the member left, the household was deleted).
    raise exception 'invalid link token: no longer valid' using errcode = '28000';
  end if;
  insert into private.alert_link_uses (outbox_id, action, used_at) values (v_id, v_parts[1], p_now)
  on conflict do nothing;
  if not found then
    raise exception 'invalid link token: already used' using errcode = '28000';
  end if;
  select a.* into v_alert from public.alerts a where a.id = v_row.alert_id for update;
  if v_parts[1] = 'a' then
    v_was_open := v_alert.acknowledged_at is null;
    if v_was_open then
      update public.alerts a set acknowledged_at = p_now, acknowledged_by = v_row.user_id
       where a.id = v_alert.id;
    end if;
    v_result := jsonb_build_object('action', 'ack', 'alert_id', v_alert.id,
      'household_id', v_alert.household_id, 'relative_name', v_row.payload ->> 'relative_name',
      'result', case when v_was_open then 'acknowledged' else 'already_acknowledged' end,
      'call_session_id', null);
  else
    if v_alert.relative_id is null then
      raise exception 'invalid link token: this alert names no relative to call' using errcode = '28000';
    end if;
    -- request_call_now lets the service role call any relative; the API's connection holds
    -- that role but sends no JWT claims, so say it for this one call (transaction-local, and
    -- undone with the call's own rollback if it is refused).
    v_claims := current_setting('request.jwt.claims', true);
    perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
    v_session := public.request_call_now(v_alert.relative_id);
    perform set_config('request.jwt.claims', coalesce(v_claims, ''), true);
    v_result := jsonb_build_object('action', 'call', 'alert_id', v_alert.id,
      'household_id', v_alert.household_id, 'relative_name', v_row.payload ->> 'relative_name',
      'result', 'call_requested', 'call_session_id', v_session);
  end if;
  update private.alert_link_uses u set result = v_result where u.outbox_id = v_id and u.action = v_parts[1];
  return v_result;
end
$$;

-- An SMS reply (the API has verified X-Twilio-Signature). OK / ACK / YES / 1 acknowledges the
-- newest open alert told to that number within the reply window; STOP and its synonyms
-- disable the number's methods (Twilio itself blocks further sends). A repeated MessageSid
-- gets the first answer.
create or replace function public.record_sms_reply(
  p_from text, p_body text, p_message_sid text, p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_word text := upper(regexp_replace(coalesce(p_body, ''), '[^A-Za-z0-9]', '', 'g'));
  v_result jsonb;
  v_row private.outbox;
  v_window interval := (select s.reply_window from private.alert_settings s);
begin
  if p_message_sid is null or p_message_sid !~ '^[A-Z]{2}[0-9a-fA-F]{32}$' then
    raise exception 'invalid p_message_sid: a Twilio message SID (SM + 32 hex digits) is required'
      using errcode = '22023';
  end if;
  if p_from is null or p_from !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'invalid p_from: an E.164 phone number is required' using errcode = '22023';
  end if;
  select r.result into v_result from private.sms_replies r where r.message_sid = p_message_sid;
  if v_result is not null then
    return v_result;
  end if;
  if not exists (select 1 from public.contact_methods m
                 where m.channel = 'sms' and m.address = p_from and m.verified_at is not null) then
    v_result := jsonb_build_object('result', 'unknown_sender', 'alert_id', null, 'reply', null);
  elsif v_word in ('STOP', 'STOPALL', 'UNSUBSCRIBE', 'CANCEL', 'END', 'QUIT') then
    update public.contact_methods m
       set disabled_at = coalesce(m.disabled_at, p_now),
           disabled_reason = coalesce(m.disabled_reason, 'the recipient replied STOP')
     where m.channel = 'sms' and m.address = p_from;
    update private.outbox o set status = 'cancelled', last_error = 'not sent: the recipient replied STOP'
      from public.contact_methods m
     where o.method_id = m.id and m.channel = 'sms' and m.address = p_from and o.status = 'queued';
    v_result := jsonb_build_object('result', 'stopped', 'alert_id', null, 'reply', null);
  elsif v_word in ('START', 'UNSTOP') then
    v_result := jsonb_build_object('result', 'started', 'alert_id', null,
      'reply', 'To get CallPanion alerts here again, add this number in the dashboard.');
  elsif v_word in ('OK', 'ACK', 'YES', 'Y', '1') then
    select o.* into v_row from private.outbox o
      join public.contact_methods m on m.id = o.method_id
      join public.alerts a on a.id = o.alert_id
     where m.channel = 'sms' and m.address = p_from and m.verified_at is not null
       and o.kind = 'alert' and o.status = 'sent' and o.sent_at >= p_now - v_window
     order by (a.acknowledged_at is null) desc, o.sent_at desc
     limit 1;
    if v_row.id is null then
      v_result := jsonb_build_object('result', 'no_alert', 'alert_id', null,
        'reply', 'There is no CallPanion alert to acknowledge.');
    else
      update public.alerts a set acknowledged_at = p_now, acknowledged_by = v_row.user_id
       where a.id = v_row.alert_id and a.acknowledged_at is null;
      v_result := jsonb_build_object(
        'result', case when found then 'acknowledged' else 'already_acknowledged' end,
        'alert_id', v_row.alert_id,
        'reply', case when found then 'Thank you: the alert is acknowledged and nobody else will be told.'
                      else 'This alert was already acknowledged.' end);
    end if;
  else
    v_result := jsonb_build_object('result', 'not_understood', 'alert_id', null,
      'reply', 'Reply OK to acknowledge the CallPanion alert.');
  end if;
  insert into private.sms_replies (message_sid, from_number, result, received_at)
  values (p_message_sid, p_from, v_result, p_now)
  on conflict (message_sid) do nothing;
  return v_result;
end
$$;

-- How far along a Twilio message status is: queued < accepted < sending < sent < a final one
-- (delivered, undelivered, failed: equal, so the later report of two finals wins).
create or replace function private.sms_status_rank(p_status text) returns integer
language sql immutable
set search_path = ''
as $$
  -- (least() skips nulls: an unknown status must stay null.)
  select case when p.pos is not null then least(p.pos, 5) end
  from (select array_position(array['queued', 'accepted', 'sending', 'sent', 'delivered',
                                    'undelivered', 'failed'], p_status) as pos) p
$$;

-- A Twilio status callback: the message's later fate, newest state wins. 30005 (unknown
-- destination) and 30006 (landline or unreachable carrier) disable the number. A callback can
-- overtake the worker's record of the sid (Twilio answers the send, then calls back at once):
-- an unknown sid's newest status is kept a day in private.sms_status_pending and applied when
-- record_outbox_results stores that sid (answer "pending").
create or replace function public.record_sms_status(
  p_message_sid text, p_status text, p_error_code text default null,
  p_now timestamptz default now())
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_rank integer := private.sms_status_rank(p_status);
  v_row private.outbox;
begin
  if v_rank is null then
    raise exception 'invalid p_status: "%" is not one of queued, accepted, sending, sent, delivered, undelivered, failed',
      left(p_status, 50) using errcode = '22023';
  end if;
  if p_message_sid is null or p_message_sid !~ '^[A-Za-z]{2}[0-9A-Za-z]{1,64}$' then
    raise exception 'invalid p_message_sid: a Twilio message SID is required' using errcode = '22023';
  end if;
  select o.* into v_row from private.outbox o
   where o.provider_message_id = p_message_sid and o.channel = 'sms' for update;
  if v_row.id is null then
    delete from private.sms_status_pending p where p.received_at < p_now - interval '1 day';
    insert into private.sms_status_pending as p (message_sid, status, error_code, received_at)
    values (p_message_sid, p_status, nullif(p_error_code, ''), p_now)
    on conflict (message_sid) do update
      set status = excluded.status, error_code = excluded.error_code, received_at = excluded.received_at
      where private.sms_status_rank(p.status) <= private.sms_status_rank(excluded.status);
    return jsonb_build_object('outbox_id', null, 'result', 'pending');
  end if;
  update private.outbox o
     set delivery_status = p_status, delivery_error = nullif(p_error_code, ''),
         delivery_updated_at = p_now
   where o.id = v_row.id
     and coalesce(private.sms_status_rank(o.delivery_status), 0) <= v_rank;
  if p_error_code in ('30005', '30006') then
    update public.contact_methods m
       set disabled_at = coalesce(m.disabled_at, p_now),
           disabled_reason = coalesce(m.disabled_reason, 'sms ' || p_status || ' ' || p_error_code
             || case p_error_code when '30005' then ': unknown destination'
                  else ': landline or unreachable carrier' end)
     where m.id = v_row.method_id;
  end if;
  return jsonb_build_object('outbox_id', v_row.id, 'result', 'recorded');
end
$$;

-- Contact methods (dashboard RPCs: the caller's own methods only) -------------------------

-- Send a new code to a method (through the outbox); at most codes_per_hour an hour.
create or replace function private.issue_contact_code(p_method public.contact_methods, p_now timestamptz)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_cfg private.alert_settings;
  v_code text;
  v_step integer;
begin
  select * into v_cfg from private.alert_settings;
  if (select count(*) from private.contact_verifications v
       where v.method_id = p_method.id and v.created_at > p_now - interval '1 hour') >= v_cfg.codes_per_hour then
    raise exception 'too many codes for this contact method: at most % an hour', v_cfg.codes_per_hour
      using errcode = 'P0001', hint = 'Wait, then ask for a new code.';
  end if;
  if (select count(*) from private.contact_verifications v
       join public.contact_methods m on m.id = v.method_id
       where m.user_id = p_method.user_id and v.created_at > p_now - interval '1 hour')
     >= v_cfg.codes_per_member_hour then
    raise exception 'too many codes sent for this member: at most % an hour', v_cfg.codes_per_member_hour
      using errcode = 'P0001', hint = 'Wait, then ask for a new code.';
  end if;
  v_code := lpad(((('x' || encode(extensions.gen_random_bytes(6), 'hex'))::bit(48)::bigint)
                  % 1000000)::text, 6, '0');
  -- One open code at a time: a new one replaces the old.
  update private.contact_verifications v set used_at = p_now
   where v.method_id = p_method.id and v.used_at is null;
  insert into private.contact_verifications (method_id, code_hash, expires_at, created_at)
  values (p_method.id, private.contact_code_hash(p_method.id, v_code), p_now + v_cfg.code_ttl, p_now);
  select coalesce(max(o.step), 0) + 1 into v_step from private.outbox o
   where o.kind = 'verification' and o.method_id = p_method.id;
  insert into private.outbox (kind, household_id, user_id, method_id, channel, step, payload,
                              send_at, deadline_at)
  values ('verification', p_method.household_id, p_method.user_id, p_method.id, p_method.channel,
          v_step,
          jsonb_build_object('kind', 'verification',
            'subject', 'Your CallPanion verification code',
            'text', format('Your CallPanion code is %s. It expires in %s minutes. If you did not ask for it, ignore this message.',
                           v_code, ceil(extract(epoch from v_cfg.code_ttl) / 60)),
            'code', v_code, 'expires_at', p_now + v_cfg.code_ttl),
          p_now, p_now + v_cfg.code_ttl);
  perform private.notify_outbox(1, p_now);
end
$$;

-- Add (or re-add) one of the caller's own methods in one of their households. Email and SMS
-- start unverified and get a code; a Web Push subscription (made by the member's own browser)
-- is verified at once. Returns {"method_id", "channel", "verified", "verification_sent"}.
create or replace function public.add_contact_method(
  p_household_id uuid, p_channel text, p_address text default null,
  p_subscription jsonb default null, p_label text default null, p_kinds text[] default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := (select auth.uid());
  v_address text;
  v_method public.contact_methods;
  v_sent boolean := false;
begin
  if v_user is null then
    raise exception 'add_contact_method requires a signed-in member' using errcode = '42501';
  end if;
  if p_household_id is null
     or p_household_id not in (select private.member_household_ids()) then
    raise exception 'household % not found', p_household_id using errcode = 'P0002';
  end if;
  if p_channel is null or p_channel not in ('webpush', 'email', 'sms') then
    raise exception 'invalid p_channel: "%" is not one of webpush, email, sms', left(p_channel, 50)
      using errcode = '22023';
  end if;
  if p_channel = 'webpush' then
    if p_subscription is null or jsonb_typeof(p_subscription) <> 'object'
       or coalesce(jsonb_typeof(p_subscription -> 'endpoint'), '') <> 'string'
       or coalesce(jsonb_typeof(p_subscription #> '{keys,p256dh}'), '') <> 'string'
       or coalesce(jsonb_typeof(p_subscription #> '{keys,auth}'), '') <> 'string' then
      raise exception 'invalid p_subscription: PushSubscription.toJSON() is required: {endpoint, keys: {p256dh, auth}}'
        using errcode = '22023';
    end if;
    v_address := p_subscription ->> 'endpoint';
  else
    if p_address is null then
      raise exception 'invalid p_address: an % is required',
        case p_channel when 'email' then 'email address' else 'E.164 phone number' end
        using errcode = '22023';
    end if;
    v_address := case p_channel when 'email' then lower(btrim(p_address))
                 else regexp_replace(p_address, '[[:space:]()-]', '', 'g') end;
  end if;
  begin
    insert into public.contact_methods as m (household_id, user_id, channel, address, push_p256dh,
                                             push_auth, label, kinds, verified_at)
    values (p_household_id, v_user, p_channel, v_address,
            p_subscription #>> '{keys,p256dh}', p_subscription #>> '{keys,auth}', p_label, p_kinds,
            case when p_channel = 'webpush' then now() end)
    on conflict (household_id, user_id, channel, address) do update
      set label = coalesce(excluded.label, m.label),
          kinds = excluded.kinds,
          push_p256dh = excluded.push_p256dh, push_auth = excluded.push_auth,
          -- Re-adding a disabled address enables it again, verified anew (a browser's own
          -- subscription at once).
          verified_at = case when m.disabled_at is null then m.verified_at else excluded.verified_at end,
          disabled_at = null, disabled_reason = null
    returning m.* into v_method;
  exception when check_violation or not_null_violation then
    raise exception '%', sqlerrm using errcode = '22023';
  end;
  if v_method.verified_at is null then
    perform private.issue_contact_code(v_method, now());
    v_sent := true;
  end if;
  return jsonb_build_object('method_id', v_method.id, 'channel', v_method.channel,
                            'verified', v_method.verified_at is not null, 'verification_sent', v_sent);
end
$$;

-- The caller's own method, locked; not found otherwise (same answer as "not yours").
create or replace function private.own_contact_method(p_method_id uuid)
returns public.contact_methods
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_method public.contact_methods;
begin
  select m.* into v_method from public.contact_methods m
   where m.id = p_method_id and m.user_id = (select auth.uid())
     and m.household_id in (select private.member_household_ids())
   for update;
  if v_method.id is null then
    raise exception 'contact method % not found', p_method_id using errcode = 'P0002';
  end if;
  return v_method;
end
$$;

create or replace function public.resend_contact_verification(p_method_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_method public.contact_methods := private.own_contact_method(p_method_id);
begin
  if v_method.verified_at is not null then
    return jsonb_build_object('method_id', v_method.id, 'verified', true, 'verification_sent', false);
  end if;
  if v_method.disabled_at is not null then
    raise exception 'contact method is disabled: %', v_method.disabled_reason
      using errcode = 'P0001', hint = 'Add the address again to enable it.';
  end if;
  perform private.issue_contact_code(v_method, now());
  return jsonb_build_object('method_id', v_method.id, 'verified', false, 'verification_sent', true);
end
$$;

-- Enter the code back. Answers (never raises for a wrong code, so the count of wrong tries
-- is kept): {"method_id", "verified", "attempts_left", "reason"}.
create or replace function public.confirm_contact_method(p_method_id uuid, p_code text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_method public.contact_methods := private.own_contact_method(p_method_id);
  v_max integer := (select s.code_attempts from private.alert_settings s);
  v_ver private.contact_verifications;
begin
  if v_method.verified_at is not null then
    return jsonb_build_object('method_id', v_method.id, 'verified', true, 'attempts_left', null,
                              'reason', null);
  end if;
  if p_code is null or p_code !~ '^[0-9]{6}$' then
    raise exception 'invalid p_code: six digits are required' using errcode = '22023';
  end if;
  select v.* into v_ver from private.contact_verifications v
   where v.method_id = v_method.id and v.used_at is null
   order by v.created_at desc limit 1 for update;
  if v_ver.id is null or v_ver.expires_at < now() or v_ver.wrong >= v_max then
    return jsonb_build_object('method_id', v_method.id, 'verified', false, 'attempts_left', 0,
      'reason', case when v_ver.id is null then 'no code is open: ask for a new one'
                     when v_ver.wrong >= v_max then 'too many wrong codes: ask for a new one'
                     else 'the code has expired: ask for a new one' end);
  end if;
  if private.contact_code_hash(v_method.id, p_code) <> v_ver.code_hash then
    update private.contact_verifications v set wrong = v.wrong + 1 where v.id = v_ver.id;
    return jsonb_build_object('method_id', v_method.id, 'verified', false,
      'attempts_left', v_max - v_ver.wrong - 1,
      'reason', case when v_max - v_ver.wrong - 1 > 0 then 'wrong code'
                     else 'too many wrong codes: ask for a new one' end);
  end if;
  update private.contact_verifications v set used_at = now() where v.id = v_ver.id;
  update public.contact_methods m set verified_at = now() where m.id = v_method.id;
  return jsonb_build_object('method_id', v_method.id, 'verified', true, 'attempts_left', null,
                            'reason', null);
end
$$;

create or replace function public.remove_contact_method(p_method_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_method public.contact_methods := private.own_contact_method(p_method_id);
begin
  delete from public.contact_methods m where m.id = v_method.id;
end
$$;

create or replace function public.set_contact_method_kinds(p_method_id uuid, p_kinds text[])
returns public.contact_methods
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_method public.contact_methods := private.own_contact_method(p_method_id);
begin
  begin
    update public.contact_methods m set kinds = p_kinds where m.id = v_method.id
    returning m.* into v_method;
  exception when check_violation then
    raise exception '%', sqlerrm using errcode = '22023';
  end;
  return v_method;
end
$$;

-- Visible to the household ------------------------------------------------------------------

-- Every delivery and failure of the caller's households (or of one alert), newest first, with
-- addresses masked. The service role sees every household.
create or replace function public.alert_deliveries(
  p_alert_id uuid default null, p_household_id uuid default null, p_limit integer default 200)
returns table (
  outbox_id uuid, alert_id uuid, household_id uuid, kind text, step smallint, user_id uuid,
  channel text, destination_hint text, status text, attempts integer, send_at timestamptz,
  sent_at timestamptz, delivery_status text, last_error text, method_disabled_reason text,
  created_at timestamptz)
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception 'invalid p_limit: % is not between 1 and 1000', p_limit using errcode = '22023';
  end if;
  return query
  select o.id, o.alert_id, o.household_id, o.kind, o.step, o.user_id, o.channel,
         private.mask_address(m.channel, m.address), o.status, o.attempts, o.send_at, o.sent_at,
         o.delivery_status, o.last_error, m.disabled_reason, o.created_at
  from private.outbox o
  left join public.contact_methods m on m.id = o.method_id
  where o.kind in ('alert', 'all_clear')
    and (p_alert_id is null or o.alert_id = p_alert_id)
    and (p_household_id is null or o.household_id = p_household_id)
    -- The service role (a worker or API connection: no JWT, since PostgREST always sends one
    -- with a subject for `authenticated`, and anon may not call this) sees every household.
    and ((select auth.role()) = 'service_role' or (select auth.uid()) is null
         or o.household_id in (select private.member_household_ids()))
  order by o.created_at desc, o.step desc
  limit p_limit;
end
$$;

-- pg_cron ---------------------------------------------------------------------------------

-- The escalation job (as private.ensure_scheduler_jobs: a no-op without pg_cron; re-runnable).
create or replace function private.ensure_alert_jobs()
returns text[]
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    raise warning 'pg_cron is not enabled here: schedule select public.run_alert_escalations() every minute with another scheduler';
    return '{}'::text[];
  end if;
  execute format('select cron.schedule(%L, %L, %L)', 'callpanion-alert-escalation', '* * * * *',
                 'select public.run_alert_escalations()');
  return array['callpanion-alert-escalation'];
end
$$;
select private.ensure_alert_jobs();

-- Privileges ------------------------------------------------------------------------------

revoke all on function
  private.alert_is_critical(text), private.b64url(bytea), private.b64url_decode(text),
  private.alert_key(), private.alert_link_token(bytea, text, uuid, bigint),
  private.contact_code_hash(uuid, text),
  private.mask_address(text, text), private.after_quiet_hours(timestamptz, text, time, time),
  private.notify_outbox(integer, timestamptz),
  private.enqueue_alert_steps(uuid[], integer[], timestamptz),
  private.advance_escalation(uuid, timestamptz),
  private.on_alerts_raised(), private.on_alert_closed(), private.on_relative_answered(),
  private.outbox_has_presence_claims(), private.reclaim_orphaned_outbox(bigint[]),
  private.issue_contact_code(public.contact_methods, timestamptz),
  private.own_contact_method(uuid), private.ensure_alert_jobs(), private.sms_status_rank(text),
  private.alert_kinds(), private.is_alert_kinds(text, text[])
  from public, anon, authenticated, service_role;
-- CHECK constraints call these as whoever writes the row.
grant execute on function private.alert_kinds(), private.is_alert_kinds(text, text[])
  to authenticated, service_role;
-- Phase 2 and claim_due_calls (run as the service role) reach the outbox's reclaim.
grant execute on function private.outbox_has_presence_claims(), private.reclaim_orphaned_outbox(bigint[])
  to service_role;

revoke all on function
  public.run_alert_escalations(timestamptz),
  public.claim_outbox(text, integer, interval, timestamptz, text[]),
  public.record_outbox_results(text, jsonb, timestamptz),
  public.renew_outbox_leases(text, uuid[], interval, timestamptz),
  public.release_outbox_leases(text, uuid[]), public.next_outbox_at(timestamptz),
  public.outbox_depth(), public.redeem_alert_link(text, timestamptz),
  public.record_sms_reply(text, text, text, timestamptz),
  public.record_sms_status(text, text, text, timestamptz)
  from public, anon, authenticated;
grant execute on function
  public.run_alert_escalations(timestamptz),
  public.claim_outbox(text, integer, interval, timestamptz, text[]),
  public.record_outbox_results(text, jsonb, timestamptz),
  public.renew_outbox_leases(text, uuid[], interval, timestamptz),
  public.release_outbox_leases(text, uuid[]), public.next_outbox_at(timestamptz),
  public.outbox_depth(), public.redeem_alert_link(text, timestamptz),
  public.record_sms_reply(text, text, text, timestamptz),
  public.record_sms_status(text, text, text, timestamptz)
  to service_role;

revoke all on function
  public.add_contact_method(uuid, text, text, jsonb, text, text[]),
  public.resend_contact_verification(uuid), public.confirm_contact_method(uuid, text),
  public.remove_contact_method(uuid), public.set_contact_method_kinds(uuid, text[]),
  public.alert_deliveries(uuid, uuid, integer)
  from public, anon;
grant execute on function
  public.add_contact_method(uuid, text, text, jsonb, text, text[]),
  public.resend_contact_verification(uuid), public.confirm_contact_method(uuid, text),
  public.remove_contact_method(uuid), public.set_contact_method_kinds(uuid, text[])
  to authenticated;
grant execute on function public.alert_deliveries(uuid, uuid, integer) to authenticated, service_role;
