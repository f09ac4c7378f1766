"""The state machine's edges: equal timestamps, exact boundaries, and fields nobody read back.

Issue 26. Each test pins one value a plausible one-line change would alter without any other
test noticing: a report as old as the applied one, an answered call that fails, a missed
call a report reopens, a conversation id that belongs to another call.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from python_worker.emulators.elevenlabs import transcription_payload
from tests.support.edges import (
    OCCURRENCE,
    Conn,
    add_family,
    add_queue_row,
    add_schedule,
    add_session,
    conversation,
    deliver,
    event,
    row,
    session,
    unix,
)


def test_a_report_as_old_as_the_applied_one_is_superseded(db: Conn) -> None:
    family = add_family(db)
    target = add_session(db, family, None, OCCURRENCE, 1, "ringing")
    conv = conversation()
    stamp = unix(OCCURRENCE) + 600
    start = unix(OCCURRENCE + timedelta(seconds=10))

    def report(summary: str, timestamp: float) -> dict[str, object]:
        payload = transcription_payload(
            conv, call_session_id=str(target), summary=summary, start_time_unix_secs=start
        )
        payload["event_timestamp"] = timestamp
        return deliver(db, payload)

    assert report("first", stamp)["status"] == "processed"
    # The same instant written as 1767607800.0: another dedupe key, so a second event (not a
    # redelivery), exactly as old as the applied one. The first one stored stands.
    assert report("second", float(stamp))["status"] == "superseded"
    log = row(db, "select summary from call_logs where call_session_id = %s", [target])
    assert log["summary"] == "first"


def test_an_answered_call_that_ends_before_connecting_fails_at_the_devices_time(
    db: Conn,
) -> None:
    family = add_family(db)
    target = add_session(db, family, None, OCCURRENCE, 1, "accepted")
    ended = OCCURRENCE + timedelta(seconds=30)
    assert event(db, family, target, "ended", ended)["status"] == "failed"
    r = session(db, target)
    assert (r["status"], r["ended_at"], r["failure_reason"]) == (
        "failed",
        ended,
        "the call ended before the conversation connected",
    )
    # Reported again, it changes nothing (the first end stands).
    assert event(db, family, target, "ended", ended + timedelta(seconds=9))["changed"] is False
    assert session(db, target)["ended_at"] == ended


def test_a_missed_call_a_report_reopens_loses_its_failure_reason(db: Conn) -> None:
    family = add_family(db)
    schedule = add_schedule(db, family)
    target = add_session(
        db, family, schedule, OCCURRENCE, 1, "missed",
        failure_reason="not answered: the ring timed out on the device",
    )  # fmt: skip
    result = deliver(
        db,
        transcription_payload(
            conversation(),
            call_session_id=str(target),
            start_time_unix_secs=unix(OCCURRENCE + timedelta(seconds=20)),
        ),
    )
    assert result["status"] == "processed"
    r = session(db, target)
    assert (r["status"], r["failure_reason"]) == ("completed", None)
    log = row(db, "select discrepancies from call_logs where call_session_id = %s", [target])
    assert {
        "kind": "reopened",
        "detail": "session was missed (not answered: the ring timed out on the device): the "
        "conversation took place",
    } in log["discrepancies"]


def test_a_completed_sessions_own_failure_reason_stays(db: Conn) -> None:
    # Phase 2's no_end_event: no end event did arrive, the report does not change that.
    family = add_family(db)
    target = add_session(
        db, family, None, OCCURRENCE, 1, "completed", failure_reason="no_end_event",
        conversation_id=None,
    )  # fmt: skip
    conv = conversation()
    db.execute("update call_sessions set conversation_id = %s where id = %s", [conv, target])
    deliver(
        db,
        transcription_payload(conv, start_time_unix_secs=unix(OCCURRENCE + timedelta(seconds=6))),
    )
    assert session(db, target)["failure_reason"] == "no_end_event"


@pytest.mark.parametrize("how", ["connected", "ended"])
def test_a_conversation_of_another_call_is_409_not_a_unique_violation(db: Conn, how: str) -> None:
    family = add_family(db)
    conv = conversation()
    add_session(db, family, None, OCCURRENCE, 1, "completed", conversation_id=conv)
    target = add_session(db, family, None, OCCURRENCE + timedelta(hours=1), 1, "accepted")
    before = session(db, target)
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        event(db, family, target, how, OCCURRENCE + timedelta(hours=1, seconds=9), conv)
    assert caught.value.sqlstate == "CP409"
    assert str(caught.value.diag.message_primary) == (
        "invalid conversation_id: already belongs to another call"
    )
    assert session(db, target) == before


def test_a_failed_answer_learning_a_conversation_of_another_call_is_409(db: Conn) -> None:
    # record_device_event's own path: phase 2 failed the answer, the app's `ended` names a
    # conversation that another call already has.
    family = add_family(db)
    conv = conversation()
    add_session(db, family, None, OCCURRENCE, 1, "completed", conversation_id=conv)
    target = add_session(
        db, family, None, OCCURRENCE + timedelta(hours=1), 1, "failed",
        answered_at=OCCURRENCE + timedelta(hours=1, seconds=4),
        ended_at=OCCURRENCE + timedelta(hours=1, minutes=2),
        failure_reason="no_connected_event",
    )  # fmt: skip
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        event(db, family, target, "ended", OCCURRENCE + timedelta(hours=1, seconds=9), conv)
    assert caught.value.sqlstate == "CP409"
    assert session(db, target)["conversation_id"] is None


@pytest.mark.parametrize(
    ("window_left", "claimed"), [(timedelta(0), False), (timedelta(microseconds=1), True)]
)
def test_a_ring_window_ending_exactly_now_is_not_sent_again(
    db: Conn, window_left: timedelta, claimed: bool
) -> None:
    family = add_family(db)
    target = add_session(db, family, None, OCCURRENCE, 1, "queued")
    now = OCCURRENCE + timedelta(seconds=30)
    queue = add_queue_row(db, target, "due", ring_expires_at=now + window_left)
    rows = db.execute(
        "select queue_id from claim_due_calls('worker-b', 10, interval '30 seconds', %s)", [now]
    ).fetchall()
    assert rows == ([{"queue_id": queue}] if claimed else [])
    q = row(db, "select status, last_error from notification_queue where id = %s", [queue])
    if claimed:
        assert q["status"] == "claimed"
    else:
        assert q == {
            "status": "expired",
            "last_error": "the ring window of the first send ended before it could be sent again",
        }
        assert session(db, target)["status"] == "expired"
