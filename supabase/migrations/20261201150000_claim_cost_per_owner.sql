-- Issue 23: a claim's cost no longer grows with the rows held.
--
-- Every claim (claim_due_calls, claim_outbox) and phase 2 run private.reclaim_orphaned_leases
-- first. It looked at every claimed row and asked, row by row, whether its owner's presence
-- lock was still held: two non-inlinable SQL functions a row (a function with `set
-- search_path` is never inlined). With one worker holding the 10,000 rows of a burst that
-- was ~390 ms of CPU per claim of 100 rows (`callpanion bench claim-cost`), so the burst's
-- claims slowed down the more of it was already claimed. next_work_at, which the loop runs
-- after every claim, scanned the same rows to learn whether a peer holds any.
--
-- Now the question is asked per owner, not per row: a small partial index lists the owners
-- of the rows claimed under a presence lock, a skip scan of it yields the distinct owners
-- (one index probe each: a handful of workers, whatever the rows they hold), and only the
-- rows of an owner whose lock is seen to be gone are touched. The outbox half
-- (private.reclaim_orphaned_outbox, 20261201120100) is called exactly as before.

-- The owners of rows claimed under a presence lock (rows claimed without one keep plain
-- lease semantics and are not listed).
create index notification_queue_presence_owner_idx on public.notification_queue (locked_by)
  where status = 'claimed' and presence_claimed_at is not null;

-- The distinct owners in that index: a recursive skip scan, one probe per owner.
create or replace function private.presence_owners()
returns setof text
language sql stable
set search_path = ''
as $$
  with recursive o(w) as (
    (select q.locked_by from public.notification_queue q
     where q.status = 'claimed' and q.presence_claimed_at is not null
     order by q.locked_by limit 1)
    union all
    select (select q.locked_by from public.notification_queue q
            where q.status = 'claimed' and q.presence_claimed_at is not null
              and q.locked_by > o.w
            order by q.locked_by limit 1)
    from o where o.w is not null
  )
  select o.w from o where o.w is not null
$$;

-- As 20261201120100_family_alerts_functions.sql (the call queue and the outbox alike), with
-- the call queue's half per owner: only the rows of owners whose lock is gone are read.
-- Rows such an owner claimed before this server started (a Postgres restart drops every lock
-- while the workers reconnect) keep their lease as before; they also leave the owner index
-- (presence_claimed_at cleared: plain lease semantics, which is what they had), so they are
-- not read again at every claim until their lease runs out.
create or replace function private.reclaim_orphaned_leases()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_live bigint[];
  v_dead text[];
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
    select array_agg(o.w) into v_dead
    from private.presence_owners() o(w)
    where not private.worker_is_live(o.w, v_live);
  end if;
  if v_dead is not null then
    update public.notification_queue q
       set status = 'due', locked_by = null, locked_until = null, presence_claimed_at = null,
           last_error = left(coalesce(q.last_error || '; ', '') || 'worker ' || q.locked_by
                             || ' is gone (its database session ended)', 2000)
     where q.id in (select e.id from public.notification_queue e
                    where e.locked_by = any (v_dead) and e.status = 'claimed'
                      and e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()
                    for update skip locked);
    get diagnostics v_rows = row_count;
    update public.notification_queue q
       set presence_claimed_at = null
     where q.id in (select e.id from public.notification_queue e
                    where e.locked_by = any (v_dead) and e.status = 'claimed'
                      and e.presence_claimed_at < pg_catalog.pg_postmaster_start_time()
                    for update skip locked);
  end if;
  if v_messages then
    v_outbox := private.reclaim_orphaned_outbox(v_live);
  end if;
  return v_rows + v_outbox;
end
$$;

-- As 20261126210000_crash_recovery.sql; whether another owner holds rows under a presence
-- lock is read from the distinct owners (private.presence_owners: a probe per owner), not from
-- a scan of every row this worker holds.
create or replace function public.next_work_at(p_now timestamptz default now(), p_worker text default null)
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
         exists (select 1 from private.presence_owners() o(w)
                 where o.w is distinct from p_worker)
$$;

revoke all on function private.presence_owners() from public, anon, authenticated;
-- claim_due_calls, next_work_at and phase 2 run as the service role.
grant execute on function private.presence_owners() to service_role;
