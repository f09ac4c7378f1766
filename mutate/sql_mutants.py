"""Hand-made SQL mutants for the invariants the database holds, and the tests that must kill them.

Each mutant replaces one exact piece of text in one landed migration. `make mutate` applies it
to a copy of the project, so the test session's fresh cluster (and every scratch database the
tests make) is migrated with the mutant, and runs the matching tests: they must fail.
tests/integration/test_sql_mutants.py checks, fast, that every `original` is still found
exactly once in its migration and that every mutant still migrates a scratch database, so the
list cannot silently rot when a migration is added or a function is rewritten.

Anchors are chosen on text that other work rarely touches (constraints, RLS policies, the
claim's row locking); the ones inside functions that are being rewritten say so in `note`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SqlMutant:
    """One change to one migration, and the tests that notice it."""

    name: str
    migration: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    note: str = ""

    def apply(self, migrations_dir: Path) -> None:
        """Rewrite the migration in `migrations_dir` (a copy, never the repository's)."""
        path = migrations_dir / self.migration
        text = path.read_text()
        if text.count(self.original) != 1:
            raise ValueError(
                f"{self.name}: the original text is found {text.count(self.original)} times in "
                f"{self.migration} (expected once); re-anchor this mutant"
            )
        path.write_text(text.replace(self.original, self.mutated))


DISPATCH = "20261124200100_dispatch.sql"
CALLS = "20261123000500_calls.sql"
SCHEDULER = "20261123000600_scheduler.sql"
HOUSEHOLDS = "20261123000200_households.sql"
CALL_EVENTS = "20261124100200_call_events.sql"
LIFECYCLE = "20261126100100_call_lifecycle_scheduler.sql"
CANCELLED_IS_OVER = "20261126180000_cancelled_call_is_over.sql"
CRASH = "20261126210000_crash_recovery.sql"
PHASE2 = "20261126211000_phase2_reclaims_orphans.sql"
LIFECYCLE_EVENTS = "20261126100200_call_lifecycle_events.sql"
ENDED_WITH_CONVERSATION = "20261126230200_ended_with_conversation.sql"

WITHDRAWAL = "tests/integration/test_withdrawal_scope.py"
EDGES = "tests/integration/test_state_edges.py"

SQL_MUTANTS: tuple[SqlMutant, ...] = (
    SqlMutant(
        name="claim_without_skip_locked",
        migration=CRASH,
        original="    limit p_limit\n    for update of q skip locked\n",
        mutated="    limit p_limit\n    for update of q\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_claim_skips_rows_another_worker_holds_instead_of_waiting",
        ),
        note="claim_due_calls (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="session_occurrence_key_widened",
        migration=LIFECYCLE,
        original=(
            "create unique index call_sessions_occurrence_key on public.call_sessions\n"
            "  (schedule_id, occurrence_at, attempt) where withdrawn_at is null;"
        ),
        mutated=(
            "create unique index call_sessions_occurrence_key on public.call_sessions\n"
            "  (schedule_id, occurrence_at, attempt, id) where withdrawn_at is null;"
        ),
        tests=(
            "tests/integration/test_constraints.py::test_one_session_per_schedule_occurrence_and_attempt",
        ),
    ),
    SqlMutant(
        name="queue_occurrence_key_widened",
        migration=LIFECYCLE,
        original=(
            "create unique index notification_queue_occurrence_key on public.notification_queue\n"
            "  (schedule_id, occurrence_at, attempt) where status <> 'cancelled';"
        ),
        mutated=(
            "create unique index notification_queue_occurrence_key on public.notification_queue\n"
            "  (schedule_id, occurrence_at, attempt, id) where status <> 'cancelled';"
        ),
        tests=(
            "tests/integration/test_constraints.py::test_one_queue_row_per_schedule_occurrence_and_attempt",
        ),
    ),
    SqlMutant(
        name="claim_at_the_deadline_refused",
        migration=CRASH,
        original="case when q.deadline_at < p_now then 'deadline'",
        mutated="case when q.deadline_at <= p_now then 'deadline'",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_row_is_claimed_at_the_very_instant_of_its_deadline",
        ),
        note="claim_due_calls (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="record_without_lease_check",
        migration=CRASH,
        original="and q.locked_by = p_worker and q.locked_until >= p_now\n    for update of q) x;",
        mutated="and q.locked_by = p_worker\n    for update of q) x;",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_lease_is_not_recorded_once_expired_even_if_nobody_took_it",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="record_at_the_lease_end_refused",
        migration=CRASH,
        original="and q.locked_by = p_worker and q.locked_until >= p_now\n    for update of q) x;",
        mutated="and q.locked_by = p_worker and q.locked_until > p_now\n    for update of q) x;",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_result_is_recorded_at_the_last_instant_of_the_lease",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="retry_landing_on_the_deadline_expires",
        migration=CRASH,
        original="       and p_now + r.delay <= r.deadline_at\n",
        mutated="       and p_now + r.delay < r.deadline_at\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_retry_landing_exactly_on_the_deadline_is_kept",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="claim_takes_back_a_live_lease",
        migration=CRASH,
        original="where e.status = 'claimed' and e.locked_until < p_now",
        mutated="where e.status = 'claimed' and e.locked_until <= p_now",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_lease_is_not_taken_back_at_its_last_instant",
        ),
        note="claim_due_calls (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="phase2_expires_at_the_deadline",
        migration=PHASE2,
        original="where q.status in ('queued', 'due') and q.deadline_at < p_now",
        mutated="where q.status in ('queued', 'due') and q.deadline_at <= p_now",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_phase2_leaves_a_row_whose_deadline_is_now",
        ),
        note="release_due_calls (state-machine work may rewrite it)",
    ),
    # Not schedules' own WITH CHECK clauses: they are defence in depth and mutating them
    # changes nothing observable (household_id is not updatable by members, the defaults
    # trigger looks the relative up under the caller's RLS, and the (relative_id,
    # household_id) foreign key ties a schedule to its relative's household).
    SqlMutant(
        name="relatives_insert_with_check_members",
        migration=HOUSEHOLDS,
        original=(
            "create policy relatives_insert on public.relatives for insert to authenticated\n"
            "  with check (household_id in (select private.admin_household_ids()));"
        ),
        mutated=(
            "create policy relatives_insert on public.relatives for insert to authenticated\n"
            "  with check (household_id in (select private.member_household_ids()));"
        ),
        tests=("tests/integration/test_rls.py::test_rls_matrix",),
    ),
    SqlMutant(
        name="household_members_insert_with_check_open",
        migration=HOUSEHOLDS,
        original=(
            "on public.household_members for insert to authenticated\n"
            "  with check (household_id in (select private.admin_household_ids()));"
        ),
        mutated="on public.household_members for insert to authenticated\n  with check (true);",
        tests=("tests/integration/test_rls.py::test_rls_matrix",),
    ),
    SqlMutant(
        name="relatives_select_using_open",
        migration=HOUSEHOLDS,
        original=(
            "create policy relatives_select on public.relatives for select to authenticated\n"
            "  using (household_id in (select private.member_household_ids()));"
        ),
        mutated=(
            "create policy relatives_select on public.relatives for select to authenticated\n"
            "  using (true);"
        ),
        tests=("tests/integration/test_rls.py::test_rls_matrix",),
    ),
    SqlMutant(
        name="households_update_using_members",
        migration=HOUSEHOLDS,
        original=(
            "for update to authenticated\n"
            "  using (id in (select private.admin_household_ids()))\n"
            "  with check (id in (select private.admin_household_ids()));"
        ),
        mutated=(
            "for update to authenticated\n"
            "  using (id in (select private.member_household_ids()))\n"
            "  with check (id in (select private.member_household_ids()));"
        ),
        tests=("tests/integration/test_rls.py::test_rls_matrix",),
    ),
    SqlMutant(
        name="accept_after_decline",
        migration=CANCELLED_IS_OVER,
        original="when 'accepted' then case when p_status in ('queued', 'ringing') then 'accepted'",
        mutated=(
            "when 'accepted' then case when p_status in ('queued', 'ringing', 'declined')"
            " then 'accepted'"
        ),
        tests=("tests/integration/test_api_calls.py",),
        note="the call-event transitions (state-machine work may rewrite them)",
    ),
    SqlMutant(
        name="delivered_overrides_an_answer",
        migration=CRASH,
        original=(
            "     where c.id = r.session_id and r.outcome = 'delivered' and c.status = 'queued'\n"
        ),
        mutated="     where c.id = r.session_id and r.outcome = 'delivered'\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_delivered_leaves_a_session_the_phone_already_answered",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
)

#: The call state machine (issue 26): withdrawal after a conversation, the webhook's rule per
#: state, its equal timestamps, and the fields nobody read back. Anchored on the latest
#: definitions (withdraw_after_conversation, record_call_event and ingest_transcription in
#: LIFECYCLE_EVENTS; record_device_event in ENDED_WITH_CONVERSATION). Not mutated, being
#: equivalent: `c.id <> p_session.id` in the withdrawal (the session that talked is
#: in_progress or completed by then, outside the statuses withdrawn) and
#: `a.relative_id = p_session.relative_id` (an alert naming the session or the schedule's
#: occurrence is the relative's already).
SAME_OCCURRENCE = (
    "c.schedule_id = p_session.schedule_id and c.occurrence_at = p_session.occurrence_at"
)
STATE_MACHINE_MUTANTS: tuple[SqlMutant, ...] = (
    SqlMutant(
        name="withdrawal_reaches_the_schedules_other_occurrences",
        migration=LIFECYCLE_EVENTS,
        original=SAME_OCCURRENCE,
        mutated="c.schedule_id = p_session.schedule_id",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_reaches_other_schedules_at_that_time",
        migration=LIFECYCLE_EVENTS,
        original=SAME_OCCURRENCE,
        mutated="c.occurrence_at = p_session.occurrence_at",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_spares_a_ringing_sibling",
        migration=LIFECYCLE_EVENTS,
        original="and c.id <> p_session.id and c.status in ('queued', 'ringing')",
        mutated="and c.id <> p_session.id and c.status in ('queued')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_spares_queued_attempts",
        migration=LIFECYCLE_EVENTS,
        original="and c.id <> p_session.id and c.status in ('queued', 'ringing')",
        mutated="and c.id <> p_session.id and c.status in ('ringing')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_rewrites_a_missed_attempt",
        migration=LIFECYCLE_EVENTS,
        original="and c.id <> p_session.id and c.status in ('queued', 'ringing')",
        mutated="and c.id <> p_session.id and c.status in ('queued', 'ringing', 'missed')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_cancels_a_claimed_queue_row",
        migration=LIFECYCLE_EVENTS,
        original="where q.call_session_id = w.id and q.status in ('queued', 'due')",
        mutated="where q.call_session_id = w.id and q.status in ('queued', 'due', 'claimed')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_leaves_a_due_queue_row",
        migration=LIFECYCLE_EVENTS,
        original="where q.call_session_id = w.id and q.status in ('queued', 'due')",
        mutated="where q.call_session_id = w.id and q.status in ('queued')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_leaves_a_queued_queue_row",
        migration=LIFECYCLE_EVENTS,
        original="where q.call_session_id = w.id and q.status in ('queued', 'due')",
        mutated="where q.call_session_id = w.id and q.status in ('due')",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_closes_the_next_occurrences_alert",
        migration=LIFECYCLE_EVENTS,
        original=(
            "p_session.schedule_id::text\n"
            "              and (a.details ->> 'occurrence_at')::timestamptz"
            " = p_session.occurrence_at));"
        ),
        mutated="p_session.schedule_id::text));",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_closes_another_schedules_alert",
        migration=LIFECYCLE_EVENTS,
        original="and a.details ->> 'schedule_id' = p_session.schedule_id::text\n",
        mutated="\n",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_finds_alerts_by_occurrence_only",
        migration=LIFECYCLE_EVENTS,
        original="     and (a.call_session_id = p_session.id\n",
        mutated="     and (false\n",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_closes_other_kinds_of_alert",
        migration=LIFECYCLE_EVENTS,
        original="a.relative_id = p_session.relative_id and a.kind = 'missed_calls'",
        mutated="a.relative_id = p_session.relative_id",
        tests=(WITHDRAWAL,),
    ),
    SqlMutant(
        name="withdrawal_after_connected_skipped",
        migration=LIFECYCLE_EVENTS,
        original=(
            "    if v_next = 'in_progress' then\n"
            "      perform private.withdraw_after_conversation(v_session);"
        ),
        mutated="    if v_next = 'in_progress' then\n      null;",
        tests=(
            f"{WITHDRAWAL}::test_connected_withdraws_only_this_occurrences_unanswered_attempts",
        ),
    ),
    SqlMutant(
        name="second_completed_attempt_while_one_is_accepted",
        migration=LIFECYCLE_EVENTS,
        original="c.id <> v_session.id and c.status in ('accepted', 'in_progress', 'completed')",
        mutated="c.id <> v_session.id and c.status in ('in_progress', 'completed')",
        tests=(f"{WITHDRAWAL}::test_an_occurrence_never_has_two_completed_attempts",),
    ),
    SqlMutant(
        name="second_completed_attempt_while_one_is_in_progress",
        migration=LIFECYCLE_EVENTS,
        original="c.id <> v_session.id and c.status in ('accepted', 'in_progress', 'completed')",
        mutated="c.id <> v_session.id and c.status in ('accepted', 'completed')",
        tests=(f"{WITHDRAWAL}::test_an_occurrence_never_has_two_completed_attempts",),
    ),
    SqlMutant(
        name="second_completed_attempt_after_one_completed",
        migration=LIFECYCLE_EVENTS,
        original="c.id <> v_session.id and c.status in ('accepted', 'in_progress', 'completed')",
        mutated="c.id <> v_session.id and c.status in ('accepted', 'in_progress')",
        tests=(f"{WITHDRAWAL}::test_an_occurrence_never_has_two_completed_attempts",),
    ),
    SqlMutant(
        name="report_as_old_as_the_applied_one_applied",
        migration=LIFECYCLE_EVENTS,
        original="if v_newest >= p_event.event_timestamp then",
        mutated="if v_newest > p_event.event_timestamp then",
        tests=(f"{EDGES}::test_a_report_as_old_as_the_applied_one_is_superseded",),
    ),
    SqlMutant(
        name="failed_answer_without_ended_at",
        migration=LIFECYCLE_EVENTS,
        original="ended_at = case when v_next in ('declined', 'missed', 'completed', 'failed')",
        mutated="ended_at = case when v_next in ('declined', 'missed', 'completed')",
        tests=(
            f"{EDGES}::test_an_answered_call_that_ends_before_connecting_fails_at_the_devices_time",
        ),
    ),
    SqlMutant(
        name="reopened_session_keeps_its_failure_reason",
        migration=LIFECYCLE_EVENTS,
        original="failure_reason = case when c.status = 'completed' then c.failure_reason end,",
        mutated="failure_reason = c.failure_reason,",
        tests=(f"{EDGES}::test_a_missed_call_a_report_reopens_loses_its_failure_reason",),
    ),
    SqlMutant(
        name="report_clears_no_end_event",
        migration=LIFECYCLE_EVENTS,
        original="failure_reason = case when c.status = 'completed' then c.failure_reason end,",
        mutated="failure_reason = null,",
        tests=(f"{EDGES}::test_a_completed_sessions_own_failure_reason_stays",),
    ),
    SqlMutant(
        name="connected_conversation_of_another_call_unique_violation",
        migration=LIFECYCLE_EVENTS,
        original="where c.conversation_id = p_conversation_id and c.id <> p_session_id) then",
        mutated="where false) then",
        tests=(f"{EDGES}::test_a_conversation_of_another_call_is_409_not_a_unique_violation",),
    ),
    SqlMutant(
        name="ended_conversation_of_another_call_unique_violation",
        migration=ENDED_WITH_CONVERSATION,
        original="where c.conversation_id = v_conversation and c.id <> p_session_id) then",
        mutated="where false) then",
        tests=(f"{EDGES}::test_a_failed_answer_learning_a_conversation_of_another_call_is_409",),
    ),
    SqlMutant(
        name="webhook_rule_missed_is_kept",
        migration=LIFECYCLE_EVENTS,
        original=(
            "v_completes := v_session.status in ('queued', 'ringing', 'accepted', 'in_progress',"
            " 'missed',"
        ),
        mutated=(
            "v_completes := v_session.status in ('queued', 'ringing', 'accepted', 'in_progress',"
        ),
        tests=(f"{EDGES}::test_a_missed_call_a_report_reopens_loses_its_failure_reason",),
    ),
    SqlMutant(
        name="webhook_rule_failed_before_an_answer_completes",
        migration=LIFECYCLE_EVENTS,
        original="or (v_session.status = 'failed' and v_session.answered_at is not null);",
        mutated="or (v_session.status = 'failed');",
        tests=(
            "tests/integration/test_call_lifecycle.py::test_what_a_conversation_report_does_in_each_state",
        ),
    ),
    SqlMutant(
        name="ended_after_an_answer_completes",
        migration=CANCELLED_IS_OVER,
        original="                           when p_status = 'accepted' then 'failed'\n",
        mutated="                           when p_status = 'accepted' then 'completed'\n",
        tests=(
            f"{EDGES}::test_an_answered_call_that_ends_before_connecting_fails_at_the_devices_time",
        ),
    ),
    SqlMutant(
        name="ring_window_ending_now_is_sent_again",
        migration=CRASH,
        original="when q.ring_expires_at <= p_now then 'ring_window' end as overdue",
        mutated="when q.ring_expires_at < p_now then 'ring_window' end as overdue",
        tests=(f"{EDGES}::test_a_ring_window_ending_exactly_now_is_not_sent_again",),
        note="claim_due_calls (dispatch work may rewrite it)",
    ),
)

SQL_MUTANTS = SQL_MUTANTS + STATE_MACHINE_MUTANTS

PAIRING_BY_ID = "20261126160000_pairing_by_id.sql"
PAIRING = "tests/integration/test_pairing_refusals.py"
CRASH_EDGES = "tests/integration/test_crash_recovery_edges.py"

#: Pairing's refusals (issue 26), anchored on claim_pairing_code's latest definition
#: (PAIRING_BY_ID; pair_device wraps it without redefining it). The security work on pairing
#: budgets rewrites this function: re-anchor these then (test_sql_mutants.py says so).
PAIRING_MUTANTS: tuple[SqlMutant, ...] = (
    SqlMutant(
        name="pairing_code_expiring_now_accepted",
        migration=PAIRING_BY_ID,
        original="     or v_pending.pairing_code_expires_at <= now()\n",
        mutated="     or v_pending.pairing_code_expires_at < now()\n",
        tests=(f"{PAIRING}::test_wrong_expired_locked_and_unknown_get_one_answer_byte_for_byte",),
    ),
    SqlMutant(
        name="pairing_code_at_its_failure_limit_weighed",
        migration=PAIRING_BY_ID,
        original="     or v_pending.pairing_failed_attempts >= v_settings.max_failures then\n",
        mutated="     or v_pending.pairing_failed_attempts > v_settings.max_failures then\n",
        tests=(f"{PAIRING}::test_a_code_is_locked_at_its_last_allowed_failure",),
    ),
    SqlMutant(
        name="pairing_guess_at_a_paired_device_weighed",
        migration=PAIRING_BY_ID,
        original="   where d.id = p_pairing_id and d.status = 'pending'\n   for update of d;\n",
        mutated="   where d.id = p_pairing_id\n   for update of d;\n",
        tests=(f"{PAIRING}::test_a_guess_at_a_paired_devices_id_costs_nothing",),
    ),
    SqlMutant(
        name="pairing_claim_without_row_lock",
        migration=PAIRING_BY_ID,
        original="   where d.id = p_pairing_id and d.status = 'pending'\n   for update of d;\n",
        mutated="   where d.id = p_pairing_id and d.status = 'pending';\n",
        tests=(f"{PAIRING}::test_two_apps_claiming_one_code_at_once_pair_one_device",),
    ),
    SqlMutant(
        name="pairing_wrong_guess_not_counted",
        migration=PAIRING_BY_ID,
        original="       set pairing_failed_attempts = d.pairing_failed_attempts + 1\n",
        mutated="       set pairing_failed_attempts = d.pairing_failed_attempts + 0\n",
        tests=(f"{PAIRING}::test_a_code_is_locked_at_its_last_allowed_failure",),
    ),
    SqlMutant(
        name="pairing_replaces_a_revoked_device",
        migration=PAIRING_BY_ID,
        original="   where d.relative_id = v_pending.relative_id and d.status = 'active'\n",
        mutated="   where d.relative_id = v_pending.relative_id and d.status <> 'pending'\n",
        tests=(f"{PAIRING}::test_with_only_revoked_devices_nothing_is_replaced",),
    ),
    SqlMutant(
        name="pairing_replaces_another_relatives_device",
        migration=PAIRING_BY_ID,
        original="   where d.relative_id = v_pending.relative_id and d.status = 'active'\n",
        mutated="   where d.household_id = v_pending.household_id and d.status = 'active'\n",
        tests=(f"{PAIRING}::test_pairing_replaces_the_active_device_and_names_it",),
    ),
)

#: Crash recovery under concurrency and restarts (issue 26), anchored on CRASH: the reclaim,
#: the live keys and the presence test are defined there and nowhere later.
CRASH_MUTANTS: tuple[SqlMutant, ...] = (
    SqlMutant(
        name="reclaim_without_skip_locked",
        migration=CRASH,
        original=(
            "                    and not private.worker_is_live(e.locked_by, v_live)\n"
            "                  for update skip locked);"
        ),
        mutated=(
            "                    and not private.worker_is_live(e.locked_by, v_live)\n"
            "                  for update);"
        ),
        tests=(
            f"{CRASH_EDGES}::test_a_reclaim_skips_an_orphan_another_worker_holds_and_takes_it_later",
        ),
    ),
    SqlMutant(
        name="reclaim_rows_claimed_before_the_restart",
        migration=CRASH,
        original="and e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()\n",
        mutated="\n",
        tests=(f"{CRASH_EDGES}::test_rows_claimed_before_a_restart_are_left_to_their_lease",),
    ),
    SqlMutant(
        name="reclaim_rows_of_a_live_worker",
        migration=CRASH,
        original="                    and not private.worker_is_live(e.locked_by, v_live)\n",
        mutated="",
        tests=(f"{CRASH_EDGES}::test_an_owner_whose_lock_key_is_negative_is_still_seen_alive",),
    ),
    SqlMutant(
        name="worker_lock_key_compared_signed",
        migration=CRASH,
        original="select (private.worker_lock_key(p_worker)::bigint & 4294967295) = any (p_live)",
        mutated="select private.worker_lock_key(p_worker)::bigint = any (p_live)",
        tests=(f"{CRASH_EDGES}::test_an_owner_whose_lock_key_is_negative_is_still_seen_alive",),
    ),
    SqlMutant(
        name="live_keys_of_every_database",
        migration=CRASH,
        original=(
            "    and l.database = (select d.oid from pg_catalog.pg_database d\n"
            "                      where d.datname = pg_catalog.current_database())\n"
        ),
        mutated="\n",
        tests=(
            f"{CRASH_EDGES}::test_a_lock_of_the_same_name_in_another_database_does_not_keep_rows",
        ),
    ),
    SqlMutant(
        name="lockless_claims_marked_present",
        migration=CRASH,
        original=(
            "  if private.worker_is_live(p_worker, private.live_worker_keys()) then\n"
            "    v_present := now();"
        ),
        mutated="  if true then\n    v_present := now();",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_rows_claimed_without_a_presence_lock_keep_their_lease",
        ),
    ),
)

SQL_MUTANTS = SQL_MUTANTS + PAIRING_MUTANTS + CRASH_MUTANTS
