"""One call state machine where scheduler, device events and webhook meet (issue 11, items 1-6).

Driven through the project's own SQL functions with an explicit p_now, at times in the past
(the webhook's times are checked against the database's clock, which must lie after them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from python_worker.emulators.elevenlabs import transcription_payload
from tests.integration.test_scheduler import (
    LEAD,
    Family,
    add_family,
    add_schedule,
    phase1,
    phase2,
    sessions,
)
from tests.support.db import Conn, acting_as, one
from tests.support.world import call_binding

W = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # a Monday, before the real clock
OCCURRENCE = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
CONCERNS = ["wellbeing_concern", "safety_concern"]


def row1(db: Conn, query: Any, params: Any = None) -> dict[str, Any]:
    """The one row a query returns (typed loosely, for reading columns)."""
    return one(db, query, params)


def live_first_attempts(db: Conn, schedule: object, at: datetime) -> list[dict[str, Any]]:
    """The attempt-1 sessions of an occurrence that still stand (not withdrawn by an edit)."""
    return [
        r
        for r in sessions(db, schedule)
        if r["occurrence_at"] == at and r["attempt"] == 1 and r["status"] != "cancelled"
    ]


def deliver(db: Conn, payload: dict[str, Any]) -> dict[str, Any]:
    """Store and ingest a webhook event exactly as the API does."""
    stored = row1(db, "select * from store_webhook_event(%s, 0)", [Jsonb(payload)])
    result = row1(
        db,
        "select process_webhook_event(%s, %s) as r",
        [stored["event_id"], CONCERNS],
    )["r"]
    assert isinstance(result, dict)
    return result


def event(db: Conn, device: object, session: object, name: str, at: datetime, **kw: Any) -> Any:
    return row1(
        db,
        "select record_call_event(%s, %s, %s, %s, %s) as r",
        [device, session, name, at, kw.get("conversation_id")],
    )["r"]


def ring(db: Conn, session: object, at: datetime) -> None:
    """The worker delivered the push: the queue row is sent, the session rings."""
    db.execute(
        "update notification_queue set status = 'sent', sent_at = %s where call_session_id = %s",
        [at, session],
    )
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = %s where id = %s",
        [at, session],
    )


def session_row(db: Conn, session: object) -> dict[str, Any]:
    return row1(db, "select * from call_sessions where id = %s", [session])


# Item 1: an occurrence withdrawn by an edit rings once the edit is undone --------------------


@pytest.mark.parametrize(
    ("away", "back"),
    [
        ("local_time = '09:45'", "local_time = '09:30'"),
        ("active = false", "active = true"),
        ("days_of_week = '{2}'", "days_of_week = '{1,2,3,4,5,6,7}'"),
    ],
)
def test_an_occurrence_rings_once_when_the_edit_that_withdrew_it_is_undone(
    db: Conn, away: str, back: str
) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, start=W, local_time=time(9, 30))
    phase1(db, OCCURRENCE - LEAD)
    [first] = live_first_attempts(db, schedule, OCCURRENCE)
    edit_at = OCCURRENCE - timedelta(minutes=4)
    for change in (away, back):
        db.execute(
            sql.SQL("update schedules set {} where id = %s").format(sql.SQL(change)), [schedule]
        )
        db.execute("select reschedule(%s, %s)", [schedule, edit_at])
    assert session_row(db, first["id"])["status"] == "cancelled"  # the withdrawal is kept
    phase1(db, edit_at)
    [again] = live_first_attempts(db, schedule, OCCURRENCE)
    assert again["id"] != first["id"]  # a new CallKit id: the device may have seen the first
    assert again["status"] == "queued"
    queue = row1(db, "select * from notification_queue where call_session_id = %s", [again["id"]])
    assert (queue["status"], queue["send_at"]) == ("queued", OCCURRENCE)
    # Once: further runs (and a rewound next_run_at) queue nothing more.
    db.execute("select reschedule(%s, %s)", [schedule, edit_at])
    phase1(db, edit_at + timedelta(minutes=1))
    assert len(live_first_attempts(db, schedule, OCCURRENCE)) == 1
    next_run = row1(db, "select next_run_at from schedules where id = %s", [schedule])
    assert next_run["next_run_at"] == OCCURRENCE + timedelta(days=1)


# Item 2: a conversation reported after a timeout withdraws the retries ----------------------


def missed_by_a_timeout_race(db: Conn, family: Family, max_attempts: int) -> tuple[Any, Any]:
    schedule = add_schedule(db, family, start=W, local_time=time(9, 30), max_attempts=max_attempts)
    phase1(db, OCCURRENCE - LEAD)
    [first] = sessions(db, schedule)
    ring(db, first["id"], OCCURRENCE)
    event(db, family.device, first["id"], "timeout", OCCURRENCE + timedelta(seconds=40))
    return schedule, first


def test_a_conversation_reported_after_a_timeout_withdraws_the_pending_retry(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule, first = missed_by_a_timeout_race(db, family, max_attempts=3)
    assert [r["status"] for r in sessions(db, schedule)] == ["missed", "queued"]
    conversation = f"conv_{uuid.uuid4().hex}"
    start = int((OCCURRENCE + timedelta(seconds=20)).timestamp())
    result = deliver(
        db,
        transcription_payload(
            conversation,
            call_session_id=str(first["id"]),
            start_time_unix_secs=start,
            call_binding=call_binding(db, first["id"]),
        ),
    )
    assert result["status"] == "processed"
    rows = sessions(db, schedule)
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "completed"), (2, "cancelled")]
    assert rows[1]["failure_reason"] == (
        "withdrawn: a conversation for this occurrence took place (attempt 1)"
    )
    retry_queue = row1(
        db, "select * from notification_queue where call_session_id = %s", [rows[1]["id"]]
    )
    assert retry_queue["status"] == "cancelled"
    # Phase 2 long after: no further attempt, no missed_calls alert.
    phase2(db, OCCURRENCE + timedelta(hours=3))
    assert len(sessions(db, schedule)) == 2
    alerts = db.execute(
        "select kind from alerts where household_id = %s", [family.household]
    ).fetchall()
    assert alerts == []


def test_a_conversation_after_the_last_attempt_closes_its_missed_calls_alert(db: Conn) -> None:
    family = add_family(db, "UTC")
    _, first = missed_by_a_timeout_race(db, family, max_attempts=1)
    alert = row1(db, "select * from alerts where call_session_id = %s", [first["id"]])
    assert alert["kind"] == "missed_calls"
    deliver(
        db,
        transcription_payload(
            f"conv_{uuid.uuid4().hex}",
            call_session_id=str(first["id"]),
            call_binding=call_binding(db, first["id"]),
            start_time_unix_secs=int((OCCURRENCE + timedelta(seconds=20)).timestamp()),
        ),
    )
    closed = row1(db, "select * from alerts where id = %s", [alert["id"]])
    assert closed["acknowledged_at"] is not None
    assert closed["details"]["resolved"] == "a conversation for this occurrence took place"


# Item 3: phase 2 closes sessions that never end ----------------------------------------------


def answered(db: Conn, family: Family, connect: bool) -> tuple[Any, str]:
    schedule = add_schedule(db, family, start=W, local_time=time(9, 30), max_attempts=1)
    phase1(db, OCCURRENCE - LEAD)
    [session] = sessions(db, schedule)
    ring(db, session["id"], OCCURRENCE)
    event(db, family.device, session["id"], "accepted", OCCURRENCE + timedelta(seconds=5))
    conversation = f"conv_{uuid.uuid4().hex}"
    if connect:
        event(
            db,
            family.device,
            session["id"],
            "connected",
            OCCURRENCE + timedelta(seconds=8),
            conversation_id=conversation,
        )
    return session["id"], conversation


def settings(db: Conn) -> dict[str, Any]:
    return row1(db, "select * from private.scheduler_settings")


def test_an_answer_that_never_connects_fails_after_the_connect_timeout(db: Conn) -> None:
    family = add_family(db, "UTC")
    session, _ = answered(db, family, connect=False)
    bound = session_row(db, session)["answered_at"] + settings(db)["connect_timeout"]
    phase2(db, bound)
    assert session_row(db, session)["status"] == "accepted"
    phase2(db, bound + timedelta(seconds=1))
    row = session_row(db, session)
    assert (row["status"], row["failure_reason"]) == ("failed", "no_connected_event")
    assert row["ended_at"] == bound


def test_a_conversation_without_an_end_is_ended_and_a_late_webhook_fills_the_log(
    db: Conn,
) -> None:
    family = add_family(db, "UTC")
    session, conversation = answered(db, family, connect=True)
    cfg = settings(db)
    answered_at = session_row(db, session)["answered_at"]
    bound = answered_at + cfg["max_conversation"] + cfg["webhook_grace"]
    phase2(db, bound)
    assert session_row(db, session)["status"] == "in_progress"
    phase2(db, answered_at + timedelta(days=365))
    row = session_row(db, session)
    assert (row["status"], row["failure_reason"]) == ("completed", "no_end_event")
    assert row["ended_at"] == answered_at + cfg["max_conversation"]
    result = deliver(
        db,
        transcription_payload(
            conversation,
            duration_secs=600,
            start_time_unix_secs=int(answered_at.timestamp()) + 3,
        ),
    )
    assert result["status"] == "processed"
    row = session_row(db, session)
    assert row["status"] == "completed"
    assert row["ended_at"] == answered_at + timedelta(seconds=603)
    log = row1(db, "select * from call_logs where call_session_id = %s", [session])
    assert log["duration_secs"] == 600


def test_call_now_is_not_blocked_by_an_answer_that_never_connected(db: Conn) -> None:
    family = add_family(db, "UTC")
    now = row1(db, "select now() as now")["now"]
    assert isinstance(now, datetime)
    db.execute(
        """insert into call_sessions (household_id, relative_id, device_id, occurrence_at,
               origin, status, ringing_at, answered_at, created_at)
           values (%s, %s, %s, %s, 'call_now', 'accepted', %s, %s, %s)""",
        [family.household, family.relative, family.device] + [now - timedelta(minutes=10)] * 4,
    )
    with acting_as(db, "authenticated", family.member):
        assert row1(db, "select request_call_now(%s) as id", [family.relative])["id"] is not None


# Items 4-6: the webhook ---------------------------------------------------------------------


def in_progress(db: Conn, family: Family) -> tuple[Any, str, datetime]:
    session, conversation = answered(db, family, connect=True)
    return session, conversation, session_row(db, session)["answered_at"]


def test_an_older_transcription_is_stored_and_changes_nothing(db: Conn) -> None:
    family = add_family(db, "UTC")
    session, conversation, answered_at = in_progress(db, family)
    start = int(answered_at.timestamp()) + 2
    newer = transcription_payload(
        conversation, event_timestamp=start + 400, summary="newer", start_time_unix_secs=start
    )
    older = transcription_payload(
        conversation, event_timestamp=start + 300, summary="older", start_time_unix_secs=start,
        data_collection={"wellbeing_concern": "yes"},
    )  # fmt: skip
    assert deliver(db, newer)["status"] == "processed"
    before = row1(db, "select * from call_logs where call_session_id = %s", [session])
    late = deliver(db, older)
    assert late["status"] == "superseded"
    assert row1(db, "select * from call_logs where call_session_id = %s", [session]) == before
    assert before["summary"] == "newer"
    stored = db.execute(
        "select event_timestamp, status from webhook_events where conversation_id = %s"
        " order by event_timestamp",
        [conversation],
    ).fetchall()
    assert [r["status"] for r in stored] == ["superseded", "processed"]
    assert db.execute("select 1 from alerts where call_session_id = %s", [session]).fetchall() == []
    # And the other way round, a newer one replaces the log.
    newest = transcription_payload(
        conversation, event_timestamp=start + 500, summary="newest", start_time_unix_secs=start
    )
    assert deliver(db, newest)["status"] == "processed"
    assert row1(db, "select summary from call_logs where call_session_id = %s", [session]) == {
        "summary": "newest"
    }


def session_in(db: Conn, family: Family, status: str) -> Any:
    """A session of the family in `status`, as the scheduler and the device would leave it."""
    at = OCCURRENCE
    ringing = status not in ("queued", "expired", "cancelled") and not status.endswith("-early")
    columns: dict[str, Any] = {"status": status.removesuffix("-early"), "created_at": at}
    if ringing:
        columns["ringing_at"] = at
    if status in ("accepted", "failed"):
        columns["answered_at"] = at + timedelta(seconds=5)
    if status not in ("queued", "ringing", "accepted"):
        columns["ended_at"] = at + timedelta(seconds=45)
    query = sql.SQL(
        """insert into call_sessions (household_id, relative_id, device_id, occurrence_at,
               origin, {}) values (%s, %s, %s, %s, 'call_now', {}) returning id"""
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    return row1(
        db, query, [family.household, family.relative, family.device, at, *columns.values()]
    )["id"]


@pytest.mark.parametrize(
    ("status", "after"),
    [
        ("queued", "completed"),
        ("ringing", "completed"),
        ("accepted", "completed"),
        ("missed", "completed"),
        ("failed", "completed"),  # failed after the answer: the conversation happened
        ("failed-early", "failed"),  # failed before it rang: none can have happened
        ("declined", "declined"),
        ("expired", "expired"),
        ("cancelled", "cancelled"),
    ],
)
def test_what_a_conversation_report_does_in_each_state(db: Conn, status: str, after: str) -> None:
    family = add_family(db, "UTC")
    session = session_in(db, family, status)
    conversation = f"conv_{uuid.uuid4().hex}"
    result = deliver(
        db,
        transcription_payload(
            conversation,
            call_session_id=str(session),
            call_binding=call_binding(db, session),
            start_time_unix_secs=int((OCCURRENCE + timedelta(seconds=10)).timestamp()),
            duration_secs=100,
        ),
    )
    assert result["status"] == "processed"
    row = session_row(db, session)
    assert row["status"] == after
    log = row1(db, "select * from call_logs where call_session_id = %s", [session])
    assert log["outcome"] == after
    assert log["summary"] is not None
    kinds = [d["kind"] for d in log["discrepancies"]]
    if after == "completed":
        assert row["conversation_id"] == conversation
        assert "state" not in kinds
    else:
        assert "state" in kinds
        stored = row1(
            db, "select error from webhook_events where conversation_id = %s", [conversation]
        )
        assert f"session is {after}" in stored["error"]


def test_webhook_times_keep_the_session_consistent(db: Conn) -> None:
    family = add_family(db, "UTC")
    session, conversation, answered_at = in_progress(db, family)
    # Started an hour before the phone was answered, "ended" 59 minutes before it.
    start = int(answered_at.timestamp()) - 3600
    deliver(db, transcription_payload(conversation, start_time_unix_secs=start, duration_secs=60))
    row = session_row(db, session)
    assert row["answered_at"] == answered_at
    assert row["ringing_at"] <= row["answered_at"] <= row["ended_at"]
    log = row1(db, "select * from call_logs where call_session_id = %s", [session])
    assert log["started_at"].timestamp() == start  # the report is kept as sent
    assert {d["kind"] for d in log["discrepancies"]} >= {"start_time"}


def test_a_webhook_start_in_the_future_is_held_to_now(db: Conn) -> None:
    family = add_family(db, "UTC")
    session, conversation, _ = in_progress(db, family)
    now = row1(db, "select now() as now")["now"]
    assert isinstance(now, datetime)
    start = int(now.timestamp()) + 86400
    deliver(db, transcription_payload(conversation, start_time_unix_secs=start, duration_secs=60))
    row = session_row(db, session)
    assert row["answered_at"] <= row["ended_at"] <= now
