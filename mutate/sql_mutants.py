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
BINDING = "20261201110000_conversation_binding.sql"
BUDGETS = "20261201111000_pairing_budgets.sql"
_BINDING_E2E = "tests/e2e/test_conversation_binding.py"
_BUDGET_TESTS = "tests/integration/test_api_pairing.py"
ALERT_TABLES = "20261201120000_family_alerts_tables.sql"
ALERTS = "20261201120100_family_alerts_functions.sql"
ALERT_TESTS = "tests/integration/test_alerts_sql.py"
CLAIM_COST = "20261201150000_claim_cost_per_owner.sql"
RECORD_COST = "20261201150100_record_cost.sql"
OWNER_TESTS = "tests/integration/test_claim_owners.py"
ERASURE = "20261201160000_erasure.sql"
PRIVACY = "20261201160100_retention_and_transcript_access.sql"
ERASURE_TESTS = "tests/integration/test_erasure.py"
PRIVACY_TESTS = "tests/integration/test_privacy.py"
ERASE_ALL = (
    f"{ERASURE_TESTS}::"
    "test_erasing_a_relative_leaves_nothing_anywhere_and_the_other_relative_keeps_all"
)
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
        migration=RECORD_COST,
        original="and q.locked_by = p_worker and q.locked_until >= p_now\n    for update of q) x;",
        mutated="and q.locked_by = p_worker\n    for update of q) x;",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_lease_is_not_recorded_once_expired_even_if_nobody_took_it",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="record_at_the_lease_end_refused",
        migration=RECORD_COST,
        original="and q.locked_by = p_worker and q.locked_until >= p_now\n    for update of q) x;",
        mutated="and q.locked_by = p_worker and q.locked_until > p_now\n    for update of q) x;",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_result_is_recorded_at_the_last_instant_of_the_lease",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    SqlMutant(
        name="retry_landing_on_the_deadline_expires",
        migration=RECORD_COST,
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
        migration=RECORD_COST,
        original=(
            "     where c.id = r.session_id and r.outcome = 'delivered' and c.status = 'queued'\n"
        ),
        mutated="     where c.id = r.session_id and r.outcome = 'delivered'\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_delivered_leaves_a_session_the_phone_already_answered",
        ),
        note="record_push_results (dispatch work may rewrite it)",
    ),
    # Issue 25 / 26 item 3: a conversation belongs to its own device's session.
    SqlMutant(
        name="bare_call_session_id_trusted",
        migration=BINDING,
        original=(
            "  if v_binding is null then\n    return row(null, format('call_session_id %s came"
        ),
        mutated="  if false then\n    return row(null, format('call_session_id %s came",
        tests=(
            f"{_BINDING_E2E}::test_a_bare_call_session_id_of_another_household_completes_nothing",
        ),
    ),
    SqlMutant(
        name="binding_of_another_session_accepted",
        migration=BINDING,
        original=(
            "  elsif v_binding is distinct from private.conversation_binding(v_session.id,\n"
            + " " * 64
            + "v_session.device_id) then"
        ),
        mutated="  elsif false then",
        tests=(
            f"{_BINDING_E2E}::test_the_attackers_own_binding_does_not_verify_for_another_session",
        ),
    ),
    SqlMutant(
        name="binding_ignored_when_conversation_known",
        migration=BINDING,
        original="    if v_binding is not null\n       and v_binding is distinct from",
        mutated="    if false\n       and v_binding is distinct from",
        tests=("tests/integration/test_binding_sql.py",),
    ),
    SqlMutant(
        name="unverified_logs_read_back",
        migration=BINDING,
        original="and l.summary is not null and l.verified_at is not null",
        mutated="and l.summary is not null",
        tests=(
            f"{_BINDING_E2E}::test_the_own_devices_conversation_completes_its_call_and_only_"
            "verified_text_is_read_back",
        ),
    ),
    SqlMutant(
        name="agent_text_unbounded",
        migration=BINDING,
        original="select private.agent_text(l.summary, 500) from public.call_logs l",
        mutated="select l.summary from public.call_logs l",
        tests=("tests/integration/test_binding_sql.py",),
    ),
    # Issue 25 / 26 item 3: pairing budgets nobody else can spend.
    SqlMutant(
        name="one_budget_for_every_household",
        migration=BUDGETS,
        original="when p_household_id is not null then 'household:' || p_household_id::text",
        mutated="when p_household_id is not null then 'household:'",
        tests=(
            f"{_BUDGET_TESTS}::test_a_spent_household_budget_stops_only_that_households_pairings",
        ),
    ),
    SqlMutant(
        name="household_budget_not_enforced",
        migration=BUDGETS,
        original=(
            "  if v_pair.household_id is not null and v_scope_spent >= v_settings.household_budget"
        ),
        mutated="  if false and v_scope_spent >= v_settings.household_budget",
        tests=(
            f"{_BUDGET_TESTS}::test_a_spent_household_budget_stops_only_that_households_pairings",
        ),
    ),
    SqlMutant(
        name="unknown_pool_not_enforced",
        migration=BUDGETS,
        original="  if v_unknown_spent >= v_settings.unknown_budget then",
        mutated="  if false then",
        tests=(
            f"{_BUDGET_TESTS}::test_a_spent_unknown_pool_stops_all_pairing_until_its_window_ends",
        ),
    ),
    SqlMutant(
        name="own_codes_spend_the_unknown_pool",
        migration=BUDGETS,
        original="    values (v_scope, v_now, 1)",
        mutated="    values (private.pairing_scope(p_pairing_id, null), v_now, 1)",
        tests=(
            "tests/integration/test_pairing_budgets.py::test_one_account_spending_as_fast_as_it_"
            "can_changes_nothing_for_another_household",
        ),
    ),
    SqlMutant(
        name="unknown_ids_spend_no_pool",
        migration=BUDGETS,
        original="  v_scope := private.pairing_scope(p_pairing_id, v_pair.household_id);",
        mutated="  v_scope := coalesce('household:' || v_pair.household_id::text, 'unknown');",
        tests=(
            "tests/integration/test_typed_pairing.py::test_an_unknown_reference_spends_the_"
            "unknown_pool_as_an_unknown_pairing_id_does",
        ),
        note="unknown guesses land in a scope no budget read sums (the shard forgotten)",
    ),
    SqlMutant(
        name="closed_codes_counted_as_wrong",
        migration=BUDGETS,
        original="     where d.id = p_pairing_id and coalesce(v_open, false);",
        mutated="     where d.id = p_pairing_id;",
        tests=("tests/integration/test_pairing_equal_work.py",),
    ),
    SqlMutant(
        name="pairing_without_push_token",
        migration=BUDGETS,
        original=(
            "  if nullif(btrim(p_fcm_token), '') is null"
            " and nullif(btrim(p_voip_token), '') is null then"
        ),
        mutated="  if false then",
        tests=(
            "tests/integration/test_pairing_budgets.py::test_a_pairing_without_any_push_token_is_"
            "refused_and_the_working_device_stays",
        ),
    ),
    # Issue 23: the reclaim and the peer check per owner; the record's cheaper statements.
    SqlMutant(
        name="reclaim_takes_live_owners_rows",
        migration=CLAIM_COST,
        original="    where not private.worker_is_live(o.w, v_live);",
        mutated="    where true;",
        tests=(f"{OWNER_TESTS}::test_only_the_rows_of_the_owner_whose_lock_is_gone_come_back",),
    ),
    SqlMutant(
        name="reclaim_ignores_dead_owners",
        migration=CLAIM_COST,
        original="  if v_dead is not null then\n",
        mutated="  if false then\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_a_dead_owners_rows_are_claimed_again_before_its_lease_ends",
        ),
    ),
    SqlMutant(
        name="presence_owners_only_the_first",
        migration=CLAIM_COST,
        original="    from o where o.w is not null\n",
        mutated="    from o where false\n",
        tests=(f"{OWNER_TESTS}::test_only_the_rows_of_the_owner_whose_lock_is_gone_come_back",),
    ),
    SqlMutant(
        name="dead_token_fallback_skipped",
        migration=RECORD_COST,
        original="             where e->>'outcome' = 'token_dead') then\n",
        mutated="             where false) then\n",
        tests=(
            "tests/integration/test_dispatch_sql.py::test_dead_voip_token_is_invalidated_and_the_fcm_fallback_tried_at_once",
        ),
    ),
    # Issue 21: the outbox's claim and record, the escalation, the links, verification.
    SqlMutant(
        name="outbox_claim_without_skip_locked",
        migration=ALERTS,
        original="    limit p_limit\n    for update of o skip locked\n",
        mutated="    limit p_limit\n    for update of o\n",
        tests=(f"{ALERT_TESTS}::test_a_claim_skips_rows_another_worker_holds_instead_of_waiting",),
    ),
    SqlMutant(
        name="outbox_once_widened",
        # Issue 24 re-made the constraint with `subject` (one provider_deletion per conversation).
        migration=ERASURE,
        original="  unique nulls not distinct (kind, alert_id, method_id, step, subject);",
        mutated="  unique nulls not distinct (kind, alert_id, method_id, step, subject, id);",
        tests=(f"{ALERT_TESTS}::test_nothing_is_told_twice",),
    ),
    SqlMutant(
        name="outbox_record_ignores_the_lease_owner",
        migration=ALERTS,
        original=(
            "      and o.status = 'claimed' and o.locked_by = p_worker"
            " and o.locked_until >= p_now\n"
            "    for update of o) x;"
        ),
        mutated=(
            "      and o.status = 'claimed' and o.locked_until >= p_now\n    for update of o) x;"
        ),
        tests=(f"{ALERT_TESTS}::test_results_sent_retry_and_lost_lease",),
    ),
    SqlMutant(
        name="outbox_retry_ignores_max_attempts",
        migration=ALERTS,
        original=(
            "             when r.outcome in ('retry', 'config_fault') and r.attempts < v_max\n"
            "                  and (r.deadline_at is null"
        ),
        mutated=(
            "             when r.outcome in ('retry', 'config_fault')\n"
            "                  and (r.deadline_at is null"
        ),
        tests=(f"{ALERT_TESTS}::test_retries_give_up_after_max_attempts",),
    ),
    SqlMutant(
        name="outbox_dead_method_kept",
        migration=ALERTS,
        original="     where m.id = r.method_id and r.outcome = 'method_dead'\n",
        mutated="     where m.id = r.method_id and false\n",
        tests=(f"{ALERT_TESTS}::test_dead_method_is_disabled_with_the_reason",),
    ),
    SqlMutant(
        name="outbox_claim_sends_for_acknowledged_alerts",
        migration=ALERTS,
        original="                when o.kind = 'alert' and a.acknowledged_at is not null\n",
        mutated="                when o.kind = 'alert' and false\n",
        tests=(f"{ALERT_TESTS}::test_a_row_claimed_when_the_alert_is_acknowledged_is_not_retried",),
    ),
    SqlMutant(
        name="outbox_orphans_not_reclaimed",
        migration=CLAIM_COST,
        original="  if v_messages then\n    v_outbox := private.reclaim_orphaned_outbox(v_live);",
        mutated="  if false then\n    v_outbox := private.reclaim_orphaned_outbox(v_live);",
        tests=(
            f"{ALERT_TESTS}::test_an_orphaned_claim_returns_at_once_through_the_shared_reclaim",
        ),
    ),
    SqlMutant(
        name="escalation_without_wait",
        migration=ALERTS,
        original=(
            "next_step_at = case when v_esc.next_step <= v_esc.steps_total then p_now "
            "+ v_esc.wait end"
        ),
        mutated="next_step_at = case when v_esc.next_step <= v_esc.steps_total then p_now end",
        tests=(
            f"{ALERT_TESTS}::test_escalation_waits_then_tells_the_next_step_once",
            f"{ALERT_TESTS}::test_repeats_start_the_chain_again",
        ),
    ),
    SqlMutant(
        name="escalation_not_stopped_by_acknowledgement",
        migration=ALERTS,
        original="   where e.alert_id = new.id and e.stopped_at is null;\n",
        mutated="   where e.alert_id = new.id and false;\n",
        tests=(f"{ALERT_TESTS}::test_dashboard_acknowledgement_stops_the_chain_for_everyone",),
    ),
    SqlMutant(
        name="acknowledgement_leaves_queued_messages",
        migration=ALERTS,
        original="   where o.alert_id = new.id and o.kind = 'alert' and o.status = 'queued';\n",
        mutated="   where o.alert_id = new.id and o.kind = 'alert' and false;\n",
        tests=(f"{ALERT_TESTS}::test_dashboard_acknowledgement_stops_the_chain_for_everyone",),
    ),
    SqlMutant(
        name="no_all_clear_after_an_answer",
        migration=ALERTS,
        original="  if v_reason = 'answered' then\n",
        mutated="  if false then\n",
        tests=(f"{ALERT_TESTS}::test_the_relative_answering_a_later_call_sends_the_all_clear",),
    ),
    SqlMutant(
        name="escalation_skips_the_chain_freeze",
        migration=ALERTS,
        original=(
            "          from public.escalation_contacts c"
            " join homes h on h.household_id = c.household_id\n"
        ),
        mutated="          from public.escalation_contacts c join homes h on false\n",
        tests=(f"{ALERT_TESTS}::test_chain_is_frozen_when_the_alert_is_raised",),
    ),
    SqlMutant(
        name="quiet_hours_ignored",
        migration=ALERTS,
        original="  if p_start is null or p_end is null or p_start = p_end then\n    return p_at;",
        mutated="  if true then\n    return p_at;",
        tests=(
            f"{ALERT_TESTS}::test_quiet_hours_hold_ordinary_kinds_until_they_end",
            f"{ALERT_TESTS}::test_quiet_hours_wrapping_midnight",
        ),
    ),
    SqlMutant(
        name="critical_kinds_held_by_quiet_hours",
        migration=ALERTS,
        original=(
            "           case when a.critical and not coalesce(st.quiet_hours_hold_critical, false)"
        ),
        mutated="           case when false",
        tests=(
            f"{ALERT_TESTS}::test_critical_kinds_pass_quiet_hours_unless_the_member_says_otherwise",
        ),
    ),
    SqlMutant(
        name="unverified_methods_told",
        migration=ALERTS,
        original="    where m.verified_at is not null and m.disabled_at is null\n",
        mutated="    where m.disabled_at is null\n",
        tests=(f"{ALERT_TESTS}::test_unverified_and_disabled_methods_are_not_told",),
    ),
    SqlMutant(
        name="link_signature_unchecked",
        migration=ALERTS,
        original=(
            "  if private.alert_link_token(private.alert_key(), v_parts[1], v_id, v_exp)"
            " is distinct from p_token then\n"
        ),
        mutated="  if false then\n",
        tests=(
            f"{ALERT_TESTS}::test_forged_link_is_refused",
            f"{ALERT_TESTS}::test_link_for_another_row_cannot_be_made_from_ours",
        ),
    ),
    SqlMutant(
        name="link_expiry_unchecked",
        migration=ALERTS,
        original="  if v_exp < extract(epoch from p_now) then\n",
        mutated="  if false then\n",
        tests=(f"{ALERT_TESTS}::test_expired_and_malformed_links_are_refused",),
    ),
    SqlMutant(
        name="link_reusable",
        migration=ALERTS,
        original="  if not found then\n    raise exception 'invalid link token: already used'",
        mutated="  if false then\n    raise exception 'invalid link token: already used'",
        tests=(f"{ALERT_TESTS}::test_ack_link_acknowledges_as_the_member_it_went_to_once",),
    ),
    SqlMutant(
        name="verification_code_unchecked",
        migration=ALERTS,
        original="  if private.contact_code_hash(v_method.id, p_code) <> v_ver.code_hash then\n",
        mutated="  if false then\n",
        tests=(f"{ALERT_TESTS}::test_verification_code_round_trip",),
    ),
    SqlMutant(
        name="verification_attempts_unlimited",
        migration=ALERTS,
        original="  if v_ver.id is null or v_ver.expires_at < now() or v_ver.wrong >= v_max then\n",
        mutated="  if v_ver.id is null or v_ver.expires_at < now() then\n",
        tests=(f"{ALERT_TESTS}::test_too_many_wrong_codes_and_expiry_need_a_new_code",),
    ),
    SqlMutant(
        name="contact_methods_readable_by_the_household",
        migration=ALERT_TABLES,
        original=(
            "  using (user_id = (select auth.uid())"
            " and household_id in (select private.member_household_ids()));\n"
            "\n-- member_alert_settings"
        ),
        mutated=(
            "  using (household_id in (select private.member_household_ids()));\n\n-- "
            "member_alert_settings"
        ),
        tests=(f"{ALERT_TESTS}::test_members_see_masked_deliveries_but_not_each_others_addresses",),
    ),
    # Issue 26 item 3: erasure (issue 24). Each one leaves something of the erased relative, or
    # lets the wrong caller erase; the catalog-wide search or the attacker tests must notice.
    SqlMutant(
        name="erasure_keeps_webhook_bodies",
        migration=ERASURE,
        original=(
            "  delete from public.webhook_events w\n"
            "   where w.call_session_id = any (v_sessions) or w.conversation_id = any (v_convs)\n"
            "      or ((w.household_id = v_household or w.household_id is null)\n"
            "          and exists (select 1 from unnest(v_needles) n"
            " where strpos(w.payload::text, n) > 0));\n"
        ),
        mutated="  delete from public.webhook_events w where false;\n",
        tests=(ERASE_ALL,),
    ),
    SqlMutant(
        name="erasure_misses_ids_inside_webhook_json",
        migration=ERASURE,
        original=(
            "  v_needles := array[p_relative_id::text] || v_sessions::text[] || v_devices::text[];"
        ),
        mutated="  v_needles := array[]::text[];",
        tests=(
            f"{ERASURE_TESTS}::test_erasure_finds_an_unmatched_webhook_by_the_ids_inside_its_body",
        ),
    ),
    SqlMutant(
        name="erasure_keeps_sms_replies",
        migration=ERASURE,
        original=(
            "  delete from private.sms_replies r"
            " where r.result ->> 'alert_id' = any (v_alerts::text[]);"
        ),
        mutated="  delete from private.sms_replies r where false;",
        tests=(ERASE_ALL,),
    ),
    SqlMutant(
        name="erasure_keeps_alerts",
        migration=ERASURE,
        original="  delete from public.alerts a where a.id = any (v_alerts);",
        mutated="  delete from public.alerts a where a.relative_id = p_relative_id and false;",
        tests=(ERASE_ALL,),
    ),
    SqlMutant(
        name="erasure_asks_elevenlabs_nothing",
        migration=ERASURE,
        original="  from unnest(v_convs) c\n  on conflict on constraint outbox_once do nothing;",
        mutated=(
            "  from unnest(v_convs) c where false\n"
            "  on conflict on constraint outbox_once do nothing;"
        ),
        tests=(
            ERASE_ALL,
            f"{ERASURE_TESTS}::test_an_outage_at_elevenlabs_only_delays_the_deletion",
        ),
    ),
    SqlMutant(
        name="erasure_keeps_the_conversation_id_once_confirmed",
        migration=ERASURE,
        original="    new.payload := new.payload - 'conversation_id';",
        mutated="    new.payload := new.payload;",
        tests=(ERASE_ALL,),
    ),
    SqlMutant(
        name="erasure_by_any_member",
        migration=ERASURE,
        original="  if p_household_id not in (select private.admin_household_ids()) then",
        mutated="  if false then",
        tests=(
            f"{ERASURE_TESTS}::test_a_plain_member_cannot_erase",
            f"{PRIVACY_TESTS}::test_a_member_or_another_household_cannot_export",
        ),
    ),
    SqlMutant(
        name="erasure_by_another_household",
        migration=ERASURE,
        original="     or p_household_id not in (select private.member_household_ids()) then",
        mutated="     or false then",
        tests=(f"{ERASURE_TESTS}::test_another_household_cannot_erase",),
    ),
    SqlMutant(
        name="late_webhook_keeps_its_body",
        migration=ERASURE,
        original="  if new.conversation_id is not null and exists (",
        mutated="  if false and exists (",
        tests=(f"{ERASURE_TESTS}::test_a_late_webhook_for_an_erased_conversation_keeps_no_body",),
    ),
    SqlMutant(
        name="transcript_column_granted_to_members",
        migration=PRIVACY,
        original="              summary_expired_at)\n  on public.call_logs to authenticated;",
        mutated=(
            "              summary_expired_at, transcript)\n  on public.call_logs to authenticated;"
        ),
        tests=(f"{PRIVACY_TESTS}::test_nobody_reads_the_transcript_column_through_the_table",),
    ),
    SqlMutant(
        name="transcript_read_by_members_when_summaries_only",
        migration=PRIVACY,
        original="     and coalesce(v_reads, 'summaries') <> 'transcripts' then",
        mutated="     and false then",
        tests=(
            f"{PRIVACY_TESTS}::test_summaries_only_a_member_is_refused_an_admin_reads_and_is_audited",
        ),
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

PAIRING = "tests/integration/test_pairing_refusals.py"
CRASH_EDGES = "tests/integration/test_crash_recovery_edges.py"

#: Pairing's refusals (issue 26), anchored on claim_pairing_code's latest definition
#: (BUDGETS; pair_device and pair_device_by_reference wrap it without redefining it). A later
#: rewrite of the claim must re-anchor these (test_sql_mutants.py says so).
PAIRING_MUTANTS: tuple[SqlMutant, ...] = (
    SqlMutant(
        name="pairing_code_expiring_now_accepted",
        migration=BUDGETS,
        original="'pending' and v_pair.pairing_code_expires_at > v_now\n",
        mutated="'pending' and v_pair.pairing_code_expires_at >= v_now\n",
        tests=(f"{PAIRING}::test_wrong_expired_locked_and_unknown_get_one_answer_byte_for_byte",),
    ),
    SqlMutant(
        name="pairing_code_at_its_failure_limit_weighed",
        migration=BUDGETS,
        original="            and v_pair.pairing_failed_attempts < v_settings.max_failures;\n",
        mutated="            and v_pair.pairing_failed_attempts <= v_settings.max_failures;\n",
        tests=(f"{PAIRING}::test_a_code_is_locked_at_its_last_allowed_failure",),
    ),
    SqlMutant(
        name="pairing_guess_at_a_paired_device_weighed",
        migration=BUDGETS,
        original="  v_open := v_pair.status = 'pending' and ",
        mutated="  v_open := ",
        tests=(f"{PAIRING}::test_a_guess_at_a_paired_devices_id_costs_nothing",),
        note="only a revoked row that kept its code tells: the revoked_code case",
    ),
    SqlMutant(
        name="pairing_claim_without_row_lock",
        migration=BUDGETS,
        original=" where d.id = p_pairing_id for update of d;\n",
        mutated=" where d.id = p_pairing_id;\n",
        tests=(f"{PAIRING}::test_two_apps_claiming_one_code_at_once_pair_one_device",),
    ),
    SqlMutant(
        name="pairing_wrong_guess_not_counted",
        migration=BUDGETS,
        original="       set pairing_failed_attempts = d.pairing_failed_attempts + 1\n",
        mutated="       set pairing_failed_attempts = d.pairing_failed_attempts + 0\n",
        tests=(f"{PAIRING}::test_a_code_is_locked_at_its_last_allowed_failure",),
    ),
    SqlMutant(
        name="pairing_replaces_a_revoked_device",
        migration=BUDGETS,
        original="   where d.relative_id = v_pair.relative_id and d.status = 'active'\n",
        mutated="   where d.relative_id = v_pair.relative_id and d.status <> 'pending'\n",
        tests=(f"{PAIRING}::test_with_only_revoked_devices_nothing_is_replaced",),
    ),
    SqlMutant(
        name="pairing_replaces_another_relatives_device",
        migration=BUDGETS,
        original="   where d.relative_id = v_pair.relative_id and d.status = 'active'\n",
        mutated="   where d.household_id = v_pair.household_id and d.status = 'active'\n",
        tests=(f"{PAIRING}::test_pairing_replaces_the_active_device_and_names_it",),
    ),
)

#: Crash recovery under concurrency and restarts (issue 26): the live keys and the presence
#: test are defined in CRASH and nowhere later; the reclaim's latest definition is in ALERTS.
CRASH_MUTANTS: tuple[SqlMutant, ...] = (
    # The calls' half of the reclaim, as the alerts rewrote it (ALERTS); the outbox's half
    # is private.reclaim_orphaned_outbox, just below it in the same migration.
    SqlMutant(
        name="reclaim_without_skip_locked",
        migration=CLAIM_COST,
        original=(
            "e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()\n"
            "                    for update skip locked);"
        ),
        mutated=(
            "e.presence_claimed_at >= pg_catalog.pg_postmaster_start_time()\n"
            "                    for update);"
        ),
        tests=(
            f"{CRASH_EDGES}::test_a_reclaim_skips_an_orphan_another_worker_holds_and_takes_it_later",
        ),
        note="reclaim_orphaned_leases, per owner (20261201150000)",
    ),
    SqlMutant(
        name="reclaim_rows_claimed_before_the_restart",
        migration=CLAIM_COST,
        original=(
            "and e.status = 'claimed'\n"
            "                      and e.presence_claimed_at"
            " >= pg_catalog.pg_postmaster_start_time()\n"
        ),
        mutated="and e.status = 'claimed'\n",
        tests=(f"{CRASH_EDGES}::test_rows_claimed_before_a_restart_are_left_to_their_lease",),
        note="reclaim_orphaned_leases, per owner (20261201150000)",
    ),
    SqlMutant(
        name="reclaim_rows_of_a_live_worker",
        migration=CLAIM_COST,
        original="    where not private.worker_is_live(o.w, v_live);",
        mutated="    where true;",
        tests=(f"{CRASH_EDGES}::test_an_owner_whose_lock_key_is_negative_is_still_seen_alive",),
        note="reclaim_orphaned_leases, per owner (20261201150000)",
    ),
    SqlMutant(
        name="outbox_reclaim_rows_of_a_live_worker",
        migration=ALERTS,
        original="                    and not private.worker_is_live(e.locked_by, p_live)\n",
        mutated="",
        tests=(f"{ALERT_TESTS}::test_an_outbox_claim_of_a_worker_still_present_is_not_reclaimed",),
        note="reclaim_orphaned_outbox: the twin of reclaim_rows_of_a_live_worker",
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
