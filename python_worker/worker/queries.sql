-- The worker's SQL: thin calls of SQL functions; read their current bodies in
-- supabase/schema.sql. Named blocks (`-- name --`, a description, the statement), loaded by
-- worker/db.py (the call path) and worker/cancels.py (through WorkerDatabase.rows).

-- claim_due_calls --
-- Claim ready rows, and rows due within the claim-ahead horizon, under a lease.
select * from public.claim_due_calls(
  p_worker => %(worker)s, p_limit => %(limit)s, p_lease => make_interval(secs => %(lease_s)s),
  p_horizon => make_interval(secs => %(horizon_s)s))

-- record_push_results --
-- Record a batch of classified push results (compare-and-set on the lease).
select * from public.record_push_results(p_worker => %(worker)s, p_results => %(results)s)

-- renew_leases --
-- Extend the leases of rows whose sends are still running.
select * from public.renew_leases(
  p_worker => %(worker)s, p_ids => %(ids)s, p_lease => make_interval(secs => %(lease_s)s))

-- release_leases --
-- Give back claimed rows that were not sent (all of the worker's when ids is null).
select * from public.release_leases(p_worker => %(worker)s, p_ids => %(ids)s)

-- next_work_at --
-- The earliest time a row may be claimed, the earliest lease to run out, the earliest ring
-- window to end, whether another live owner holds rows, and the database's clock.
select w.send_at, w.lease_expires_at, w.ring_ends_at, w.peer_leases, now() as db_now
from public.next_work_at(p_worker => %(worker)s) w

-- register_worker --
-- Take this session's presence lock for the lease owner (false: another session holds it).
select public.register_worker(%(worker)s)

-- phase_two_now --
-- Phase 2 at the worker's pace (a ring window ended); null when another worker is running it.
select public.run_phase2_now() as released

-- queue_depth --
-- Live queue rows by status, for /metrics.
select * from public.queue_depth()

-- claim_cancel_notices --
-- Claim cancel notices ("stop ringing") that may go now, under a lease (cancels.py).
select * from public.claim_cancel_notices(
  p_worker => %(worker)s, p_limit => %(limit)s, p_lease => make_interval(secs => %(lease_s)s))

-- record_cancel_results --
-- Record what happened to claimed cancel notices (compare-and-set on the lease).
select * from public.record_cancel_results(p_worker => %(worker)s, p_results => %(results)s)

-- next_cancel_notice_at --
-- When the next cancel notice may go (or a lease runs out), and the database's clock.
select public.next_cancel_notice_at() as next_at, now() as db_now

-- claim_outbox --
-- Claim family-alert messages that may go now, of the kinds this worker sends (outbox.py).
select * from public.claim_outbox(
  p_worker => %(worker)s, p_limit => %(limit)s, p_lease => make_interval(secs => %(lease_s)s),
  p_kinds => %(kinds)s)

-- record_outbox_results --
-- Record what the providers answered for claimed messages (compare-and-set on the lease).
select * from public.record_outbox_results(p_worker => %(worker)s, p_results => %(results)s)

-- renew_outbox_leases --
-- Extend the leases of messages whose sends are still running.
select * from public.renew_outbox_leases(
  p_worker => %(worker)s, p_ids => %(ids)s, p_lease => make_interval(secs => %(lease_s)s))

-- release_outbox_leases --
-- Give back claimed messages that were not sent (all of the worker's when ids is null).
select * from public.release_outbox_leases(p_worker => %(worker)s, p_ids => %(ids)s)

-- next_outbox_at --
-- When the next message may go (a send or retry time, a lease end, an escalation step).
select public.next_outbox_at() as next_at, now() as db_now

-- outbox_depth --
-- Live outbox rows by kind, channel and status, for /metrics.
select * from public.outbox_depth()
