"""A stateful property test of a call's life over the real database (issue 11, "Also").

Hypothesis interleaves, at advancing simulated times: phase 1 and phase 2 runs, a worker
claiming and delivering pushes, the phone's events, ElevenLabs' post-call reports (new,
duplicated, older than one already applied, late), schedule edits (time moved, paused,
deactivated and back) and, where it exists, the family's cancel. After every step it checks:

- no ring for an occurrence after a conversation for it is known;
- no session non-final past its bound (at the last phase 2 run);
- at most one completed session per occurrence;
- each occurrence that fits the schedule at its time is queued exactly once (after phase 1);
- every accepted webhook event is stored exactly once;
- nothing an earlier step stored is lost (sessions, their ring/answer/conversation, final
  states, logs and the newest report in them, webhook events, alerts).

Each example runs in one transaction that is rolled back. Simulated time lies in the past, so
that the database clock (which bounds device and webhook times) is always later. CI runs a
modest budget; set CALLPANION_STATEFUL_EXAMPLES (and CALLPANION_STATEFUL_STEPS) for a long run.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from python_worker.emulators.elevenlabs import transcription_payload
from tests.integration.test_scheduler import add_family
from tests.support.world import call_binding

ZONE = "Europe/London"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday, in the past, before the DST change
TIMES = [time(8, 5), time(8, 10), time(8, 20), time(8, 40)]
LEAD = timedelta(minutes=5)
FINAL = {"completed", "declined", "missed", "failed", "cancelled", "expired"}
DEVICE_EVENTS = ["delivered", "accepted", "declined", "timeout", "connected", "ended"]
#: SQLSTATEs of deliberate refusals (404, 409, 410, 422): the event is simply not allowed.
REFUSALS = {"P0002", "CP409", "CP410", "CP422"}

EXAMPLES = int(os.environ.get("CALLPANION_STATEFUL_EXAMPLES", "10"))
STEPS = int(os.environ.get("CALLPANION_STATEFUL_STEPS", "30"))

Row = dict[str, Any]


def occurrences(definition: Row, after: datetime, until: datetime) -> list[datetime]:
    """The schedule's occurrences in (after, until], from zoneinfo (fold=0), not the SQL."""
    if not definition["active"]:
        return []
    tz = ZoneInfo(ZONE)
    found = []
    day: date = after.astimezone(tz).date() - timedelta(days=1)
    while day <= until.astimezone(tz).date() + timedelta(days=1):
        at = datetime.combine(day, definition["local_time"], tzinfo=tz).astimezone(UTC)
        paused = definition["paused_until"]
        if after < at <= until and (paused is None or at >= paused):
            found.append(at)
        day += timedelta(days=1)
    return found


class CallLife(RuleBasedStateMachine):
    conn: psycopg.Connection[Row]
    #: What the runs reached, summed over examples (printed at the end: is it exercised?).
    seen: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.db = self.conn
        self.now = START
        self.last_phase2: datetime | None = None
        # Model: what each schedule is since when, conversations known, what was stored.
        self.definitions: dict[uuid.UUID, Row] = {}
        self.edited_at: dict[uuid.UUID, datetime] = {}
        self.known_at: dict[tuple[Any, Any], datetime] = {}
        self.conversations: dict[uuid.UUID, str] = {}
        self.sent_reports: list[dict[str, Any]] = []
        self.stored_events: dict[str, uuid.UUID] = {}
        self.seen_sessions: dict[uuid.UUID, Row] = {}
        self.seen_logs: set[uuid.UUID] = set()
        self.seen_alerts: set[uuid.UUID] = set()
        self.has_cancel_call = bool(
            self.q1(
                "select exists (select 1 from pg_proc where proname = 'cancel_call'"
                " and pronamespace = 'public'::regnamespace) as e"
            )["e"]
        )

    # Helpers ---------------------------------------------------------------------------

    def q(self, query: Any, params: Any = None) -> list[Row]:
        return self.db.execute(query, params).fetchall()

    def q1(self, query: Any, params: Any = None) -> Row:
        rows = self.q(query, params)
        assert len(rows) == 1, rows
        return rows[0]

    def sessions(self) -> list[Row]:
        return self.q(
            "select * from call_sessions where household_id = %s order by created_at, id",
            [self.family.household],
        )

    @staticmethod
    def occurrence_of(session: Row) -> tuple[Any, Any]:
        if session["schedule_id"] is None:
            return (session["id"], None)
        return (session["schedule_id"], session["occurrence_at"])

    def note_conversations(self) -> None:
        """A conversation is known once a session is connected or completed by a report."""
        for s in self.sessions():
            if s["conversation_id"] is not None or s["status"] == "completed":
                self.known_at.setdefault(self.occurrence_of(s), self.now)

    def teardown(self) -> None:
        tally = (
            self.q(
                """select 'session ' || c.status as what, count(*) as n from call_sessions c
                 where c.household_id = %(h)s group by 1
               union all
               select 'session ' || c.failure_reason, count(*) from call_sessions c
                 where c.household_id = %(h)s
                   and (c.withdrawn_at is not null or c.failure_reason like 'withdrawn:%%'
                        or c.failure_reason like 'no\\_%%')
                 group by 1
               union all
               select 'webhook ' || w.status, count(*) from webhook_events w
                 where w.household_id = %(h)s or w.call_session_id in
                   (select id from call_sessions where household_id = %(h)s) group by 1
               union all
               select 'requeued occurrence', count(*) from call_sessions c
                 where c.household_id = %(h)s and c.attempt = 1 and c.withdrawn_at is null
                   and exists (select 1 from call_sessions w where w.schedule_id = c.schedule_id
                               and w.occurrence_at = c.occurrence_at and w.withdrawn_at is not null)""",
                {"h": self.family.household},
            )
            if hasattr(self, "family")
            else []
        )
        self.seen.update({r["what"]: r["n"] for r in tally if r["what"]})
        self.seen["examples"] += 1
        self.db.rollback()

    # Setup -----------------------------------------------------------------------------

    @initialize(
        times=st.lists(st.sampled_from(TIMES), min_size=1, max_size=2, unique=True),
        attempts=st.integers(1, 3),
    )
    def setup(self, times: list[time], attempts: int) -> None:
        self.family = add_family(self.db, ZONE, "android")
        self.schedules: list[uuid.UUID] = []
        for local in times:
            schedule = self.q1(
                """insert into schedules (relative_id, local_time, days_of_week, max_attempts,
                       retry_interval, ring_timeout)
                   values (%s, %s, '{1,2,3,4,5,6,7}', %s, interval '2 minutes',
                           interval '30 seconds') returning id""",
                [self.family.relative, local, attempts],
            )["id"]
            self.db.execute("select reschedule(%s, %s)", [schedule, START])
            self.schedules.append(schedule)
            self.definitions[schedule] = {"local_time": local, "active": True, "paused_until": None}
            self.edited_at[schedule] = START

    # Time and the scheduler ---------------------------------------------------------------

    @rule(minutes=st.integers(0, 8), seconds=st.integers(0, 59))
    def advance(self, minutes: int, seconds: int) -> None:
        self.seen["steps"] += 1
        self.now += timedelta(minutes=minutes, seconds=seconds)

    @precondition(lambda self: self.now.hour >= 9)
    @rule()
    def next_morning(self) -> None:
        """Jump to just before the next morning's calls (the scheduler was not running)."""
        self.seen["steps"] += 1
        tomorrow = self.now.date() + timedelta(days=1)
        self.now = datetime.combine(tomorrow, time(7, 58), tzinfo=UTC)

    @rule(seconds=st.integers(5, 90))
    def tick(self, seconds: int) -> None:
        """Time passes with everything running as in production: phase 1, the worker, phase 2."""
        self.now += timedelta(seconds=seconds)
        self.phase1()
        self.worker_sends()
        self.phase2()

    @rule(seconds=st.integers(5, 30))
    def short_tick(self, seconds: int) -> None:
        """The same, more often (a second rule makes it likelier among the others)."""
        self.tick(seconds)

    @rule()
    def phase1(self) -> None:
        self.seen["steps"] += 1
        self.db.execute("select queue_upcoming_calls(%s)", [self.now])
        # Each occurrence that fits the schedule as it is since its last edit, up to the lead
        # time, is queued exactly once. One that no longer fits keeps a standing session only
        # if the call had moved on (rung, answered) before the edit, as a claimed one would.
        for schedule, definition in self.definitions.items():
            since = self.edited_at[schedule]
            wanted = set(occurrences(definition, since, self.now + LEAD))
            live = self.q(
                """select occurrence_at, status from call_sessions
                   where schedule_id = %s and attempt = 1 and withdrawn_at is null
                     and occurrence_at > %s and occurrence_at <= %s""",
                [schedule, since, self.now + LEAD],
            )
            standing = [r["occurrence_at"] for r in live]
            assert len(standing) == len(set(standing)), live
            assert wanted <= set(standing), (schedule, since, wanted, live)
            assert all(r["status"] != "queued" for r in live if r["occurrence_at"] not in wanted)

    @rule()
    def phase2(self) -> None:
        self.seen["steps"] += 1
        self.db.execute("select release_due_calls(%s)", [self.now])
        self.last_phase2 = self.now

    @rule()
    def worker_sends(self) -> None:
        self.seen["steps"] += 1
        """A worker claims what is due and every push is delivered."""
        claimed = self.q(
            "select * from claim_due_calls('sim-worker', 100, interval '30 seconds', %s)",
            [self.now],
        )
        results = [
            {"queue_id": str(r["queue_id"]), "outcome": "delivered", "provider": r["provider"],
             "token": r["push_token"], "status": 200, "message_id": f"m-{r['queue_id']}"}
            for r in claimed
        ]  # fmt: skip
        if results:
            self.db.execute(
                "select * from record_push_results('sim-worker', %s, %s)",
                [Jsonb(results), self.now],
            )

    # The phone ----------------------------------------------------------------------------

    def pick_session(self, pick: int) -> Row | None:
        """Mostly one of the latest sessions (where the action is), sometimes any."""
        rows = self.sessions()
        if not rows:
            return None
        if pick % 4:
            return rows[-1 - pick % min(3, len(rows))]
        return rows[pick % len(rows)]

    @rule(pick=st.integers(0, 1000), name=st.sampled_from(DEVICE_EVENTS))
    def device_event(self, pick: int, name: str) -> None:
        self.seen["steps"] += 1
        session = self.pick_session(pick)
        if session is None:
            return
        conversation = self.conversations.setdefault(session["id"], f"conv_{uuid.uuid4().hex}")
        try:
            with self.db.transaction():
                self.db.execute(
                    "select record_call_event(%s, %s, %s, %s, %s)",
                    [self.family.device, session["id"], name, self.now, conversation],
                )
        except psycopg.Error as error:
            assert error.sqlstate in REFUSALS, error
        self.note_conversations()

    # ElevenLabs -------------------------------------------------------------------------

    def report(self, payload: dict[str, Any]) -> Row:
        stored = self.q1("select * from store_webhook_event(%s, 0)", [Jsonb(payload)])
        key = f"elevenlabs:{payload['type']}:{payload['data']['conversation_id']}:" + str(
            payload["event_timestamp"]
        )
        if stored["duplicate"]:
            assert self.stored_events[key] == stored["event_id"]
        else:
            assert key not in self.stored_events
            self.stored_events[key] = stored["event_id"]
        if stored["status"] in ("received", "failed"):
            result = self.q1(
                "select process_webhook_event(%s, %s) as r",
                [stored["event_id"], ["wellbeing_concern"]],
            )["r"]
            assert result["status"] != "failed", result
        self.note_conversations()
        return stored

    @rule(
        pick=st.integers(0, 1000),
        started_ago=st.integers(0, 900),
        duration=st.integers(1, 900),
        stamp=st.integers(-600, 600),
    )
    def post_call_report(self, pick: int, started_ago: int, duration: int, stamp: int) -> None:
        self.seen["steps"] += 1
        session = self.pick_session(pick)
        if session is None:
            return
        conversation = self.conversations.setdefault(session["id"], f"conv_{uuid.uuid4().hex}")
        now = int(self.now.timestamp())
        timestamp = now + stamp
        payload = transcription_payload(
            conversation,
            call_session_id=str(session["id"]),
            call_binding=call_binding(self.db, session["id"]),
            event_timestamp=timestamp,
            summary=f"report {timestamp}",
            start_time_unix_secs=now - started_ago,
            duration_secs=duration,
            data_collection={"mood": "fine"},
        )
        self.sent_reports.append(payload)
        self.report(payload)

    @precondition(lambda self: bool(self.sent_reports))
    @rule(pick=st.integers(0, 1000))
    def redeliver(self, pick: int) -> None:
        """ElevenLabs delivers a report again (its retry), maybe long after."""
        self.seen["steps"] += 1
        stored = self.report(self.sent_reports[pick % len(self.sent_reports)])
        assert stored["duplicate"]

    # The family ---------------------------------------------------------------------------

    @rule(
        pick=st.integers(0, 1),
        change=st.sampled_from(["time", "active", "pause"]),
        local=st.sampled_from(TIMES),
        pause_minutes=st.integers(0, 30),
    )
    def edit_schedule(self, pick: int, change: str, local: time, pause_minutes: int) -> None:
        self.seen["steps"] += 1
        schedule = self.schedules[pick % len(self.schedules)]
        definition = dict(self.definitions[schedule])
        if change == "time":
            definition["local_time"] = local
        elif change == "active":
            definition["active"] = not definition["active"]
        else:
            definition["paused_until"] = (
                None if pause_minutes == 0 else self.now + timedelta(minutes=pause_minutes)
            )
        self.db.execute(
            """update schedules set local_time = %s, active = %s, paused_until = %s
               where id = %s""",
            [definition["local_time"], definition["active"], definition["paused_until"], schedule],
        )
        self.db.execute("select reschedule(%s, %s)", [schedule, self.now])
        self.definitions[schedule] = definition
        self.edited_at[schedule] = self.now

    @rule(pick=st.integers(0, 1), local=st.sampled_from(TIMES))
    def edit_and_maybe_undo(self, pick: int, local: time) -> None:
        """A family member switches a schedule off and on, or moves it to another time; the
        next such step often undoes it (a second edit rule makes edits likelier)."""
        schedule = self.schedules[pick % len(self.schedules)]
        if not self.definitions[schedule]["active"] or local == TIMES[0]:
            self.edit_schedule(pick, "active", local, 0)
        else:
            self.edit_schedule(pick, "time", local, 0)

    @precondition(lambda self: self.has_cancel_call)
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        self.seen["steps"] += 1
        rows = self.sessions()
        if not rows:
            return
        session = rows[pick % len(rows)]
        claims = f'{{"role": "authenticated", "sub": "{self.family.member}"}}'
        try:
            with self.db.transaction():
                self.db.execute("set local role authenticated")
                self.db.execute("select set_config('request.jwt.claims', %s, true)", [claims])
                self.db.execute(sql.SQL("select public.cancel_call(%s)"), [session["id"]])
                # SET LOCAL outlives a released savepoint (it lasts to the end of the outer
                # transaction): act as ourselves again before the savepoint is released.
                self.db.execute("reset role")
                self.db.execute("select set_config('request.jwt.claims', '', true)")
        except psycopg.Error as error:
            assert not isinstance(error, errors.InternalError_), error

    # Invariants -----------------------------------------------------------------------------

    @invariant()
    def no_ring_after_a_conversation(self) -> None:
        for s in self.sessions():
            known = self.known_at.get(self.occurrence_of(s))
            if known is not None and s["ringing_at"] is not None:
                assert s["ringing_at"] <= known, s

    @invariant()
    def nothing_open_past_its_bound(self) -> None:
        if self.last_phase2 is None:
            return
        cfg = self.q1("select * from private.scheduler_settings")
        rows = self.q(
            """select c.*, q.status as q_status, q.deadline_at from call_sessions c
               left join notification_queue q on q.call_session_id = c.id
               where c.household_id = %s and c.status not in
                 ('completed', 'declined', 'missed', 'failed', 'cancelled', 'expired')""",
            [self.family.household],
        )
        for s in rows:
            answered = s["answered_at"] or s["ringing_at"] or s["created_at"]
            if s["status"] == "queued":
                bound = s["deadline_at"] if s["q_status"] in ("queued", "due") else None
            elif s["status"] == "ringing":
                bound = s["ringing_at"] + s["ring_timeout"]
            elif s["status"] == "accepted":
                bound = answered + cfg["connect_timeout"]
            else:
                bound = answered + cfg["max_conversation"] + cfg["webhook_grace"]
            assert bound is not None, s  # a queued session always has a live queue row
            assert bound >= self.last_phase2, (s["status"], bound, self.last_phase2)

    @invariant()
    def one_completed_session_per_occurrence(self) -> None:
        done = [self.occurrence_of(s) for s in self.sessions() if s["status"] == "completed"]
        assert len(done) == len(set(done)), done

    @invariant()
    def every_accepted_event_stored_once(self) -> None:
        rows = self.q(
            "select dedupe_key, id from webhook_events where dedupe_key = any(%s)",
            [list(self.stored_events)],
        )
        assert {r["dedupe_key"]: r["id"] for r in rows} == self.stored_events

    @invariant()
    def nothing_stored_is_lost(self) -> None:
        current = {s["id"]: s for s in self.sessions()}
        for sid, before in self.seen_sessions.items():
            after = current[sid]
            for column in ("ringing_at", "answered_at", "conversation_id", "withdrawn_at"):
                if before[column] is not None:
                    assert after[column] == before[column], (column, before, after)
            if before["status"] in FINAL:
                assert after["status"] == before["status"] or (
                    before["status"] in ("missed", "failed") and after["status"] == "completed"
                ), (before["status"], after["status"])
        self.seen_sessions = current
        logs = self.q(
            """select l.id, l.summary,
                      (select max(w.event_timestamp) from webhook_events w
                        where w.call_session_id = l.call_session_id and w.status = 'processed'
                          and w.event_type = 'post_call_transcription') as newest
               from call_logs l where l.household_id = %s""",
            [self.family.household],
        )
        assert self.seen_logs <= {r["id"] for r in logs}
        self.seen_logs = {r["id"] for r in logs}
        for log in logs:  # the log holds the newest report applied
            assert log["summary"] == f"report {int(log['newest'].timestamp())}", log
        alerts = {
            r["id"]
            for r in self.q(
                "select id from alerts where household_id = %s", [self.family.household]
            )
        }
        assert self.seen_alerts <= alerts
        self.seen_alerts = alerts


def test_a_calls_life_holds_its_invariants_under_any_interleaving(database_url: str) -> None:
    # A statement that hangs fails the example with its text, instead of hanging the run.
    with psycopg.connect(
        database_url, row_factory=dict_row, options="-c statement_timeout=30000"
    ) as conn:
        CallLife.conn = conn
        try:
            run_state_machine_as_test(
                CallLife,
                settings=settings(
                    max_examples=EXAMPLES,
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        finally:
            conn.rollback()
    print("\nstateful run:", dict(sorted(CallLife.seen.items())))


@pytest.mark.parametrize(
    "definition", [{"local_time": time(9, 0), "active": True, "paused_until": None}]
)
def test_the_models_occurrences_follow_the_time_policy(definition: Row) -> None:
    """The model's own reference: one occurrence a day at the local time, none when inactive."""
    found = occurrences(definition, START, START + timedelta(days=2))
    assert found == [START.replace(hour=9), START.replace(hour=9) + timedelta(days=1)]
    assert occurrences({**definition, "active": False}, START, START + timedelta(days=2)) == []
