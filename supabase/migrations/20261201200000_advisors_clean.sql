-- What the Supabase advisors (`supabase db advisors`, the hosted dashboard's Security and
-- Performance Advisors) reported on our schema, fixed. tests/integration/test_advisors.py runs
-- the pinned CLI with `--fail-on warn` on a freshly migrated database, so a function created
-- later without a fixed search_path fails the suite.
--
-- 1. function_search_path_mutable (WARN, 16 functions). A function without its own search_path
--    resolves names through the caller's, so a role that can create objects in a schema on that
--    path could shadow what the function calls. Each gets `search_path = ''`. ALTER, not
--    CREATE OR REPLACE: every body already names its own objects with their schema (private.*,
--    and `public.schedules` is resolved to its oid when the function was created), and
--    everything else they use (format, jsonb_typeof, generate_series, operators) is in
--    pg_catalog, which is searched first even with an empty search_path. The tests that call
--    them (validation, scheduling, webhooks) prove the bodies still resolve. These are small
--    SQL functions: with a SET clause the planner no longer inlines them, so each use (the
--    CHECK constraints that validate input call one_of, matches, is_text, between_) is a plain
--    function call; no index is built on them.
-- 2. unindexed_foreign_keys (INFO, 9 keys). Each of them is followed on a delete: deleting a
--    relative cascades to its devices, schedules, sessions, logs and alerts by
--    (relative_id, household_id), and deleting a user sets created_by / acknowledged_by to null.
--    Without an index each of those is a sequential scan of the child table. The composite
--    indexes replace the single-column relative_id ones, which they cover.
-- 3. rls_enabled_no_policy (INFO, 2 tables): intended, and now said on the tables themselves.

alter function private.one_of(text, text, text[]) set search_path = '';
alter function private.matches(text, text, text, text) set search_path = '';
alter function private.between_(text, anycompatible, anycompatible, anycompatible) set search_path = '';
alter function private.is_text(text, text, integer) set search_path = '';
alter function private.notify_channel() set search_path = '';
alter function private.occurrences_between(text, time, smallint[], text, timestamptz, timestamptz, timestamptz)
  set search_path = '';
alter function private.schedule_next_run(public.schedules, timestamptz) set search_path = '';
alter function private.schedule_still_wants(public.schedules, timestamptz) set search_path = '';
alter function private.unreachable_reason(uuid, text) set search_path = '';
alter function private.call_payload(text, text, text, interval) set search_path = '';
alter function private.json_text(jsonb) set search_path = '';
alter function private.json_number(jsonb) set search_path = '';
alter function private.json_object(jsonb) set search_path = '';
alter function private.is_concerning(jsonb) set search_path = '';
alter function private.webhook_clock_tolerance() set search_path = '';
alter function private.is_time_of_day(text, time) set search_path = '';

-- A relative's rows, found by the cascade from public.relatives (id, household_id).
create index device_pairs_relative_household_idx on public.device_pairs (relative_id, household_id);
drop index public.device_pairs_relative_idx;
create index schedules_relative_household_idx on public.schedules (relative_id, household_id);
drop index public.schedules_relative_idx;
create index call_sessions_relative_household_idx on public.call_sessions (relative_id, household_id);
drop index public.call_sessions_relative_idx;
create index call_logs_relative_household_idx on public.call_logs (relative_id, household_id);
drop index public.call_logs_relative_idx;
create index alerts_relative_household_idx on public.alerts (relative_id, household_id);
drop index public.alerts_relative_idx;

-- A deleted user's rows, found by ON DELETE SET NULL from auth.users.
create index households_created_by_idx on public.households (created_by);
create index device_pairs_created_by_idx on public.device_pairs (created_by);
create index schedules_created_by_idx on public.schedules (created_by);
create index alerts_acknowledged_by_idx on public.alerts (acknowledged_by);

comment on table public.notification_queue is
  'One row per push attempt of one occurrence. RLS is enabled with no policy on purpose '
  '(the advisors'' rls_enabled_no_policy): anon and authenticated must never read or write it; '
  'the phases and the worker (service_role, which bypasses RLS) change it through SQL functions.';
comment on table public.webhook_events is
  'Every inbound webhook as received (audit, replay, dedupe). RLS is enabled with no policy on '
  'purpose (the advisors'' rls_enabled_no_policy): anon and authenticated must never read it; the '
  'webhook route writes it through SQL functions as service_role (which bypasses RLS), and the '
  'dashboard reads outcomes from call_logs, never raw payloads.';
