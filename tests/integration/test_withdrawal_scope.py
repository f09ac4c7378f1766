"""Which rows a conversation withdraws, and that an occurrence has one completed attempt.

Issue 26: once a conversation for an occurrence is known (the app's `connected`, or a post-call
report that completes a session), private.withdraw_after_conversation cancels the occurrence's
other attempts that are queued or ringing, cancels their queue rows that no worker holds (a
claimed row is left to the worker's compare-and-set), and closes the occurrence's own
missed_calls alert. The schedule's other occurrences, another schedule at the same instant,
attempts already over, claimed rows and other alerts are left exactly as they were.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from python_worker.emulators.elevenlabs import transcription_payload
from tests.support.edges import (
    OCCURRENCE,
    WITHDRAWN,
    Conn,
    Family,
    add_family,
    add_missed_alert,
    add_queue_row,
    add_schedule,
    add_session,
    alert,
    conversation,
    deliver,
    event,
    queue_status,
    row,
    session,
    unix,
)

NEXT_DAY = OCCURRENCE + timedelta(days=1)


@dataclass
class Occurrences:
    """Two occurrences of one schedule, and another schedule at the same instant."""

    family: Family
    schedule: uuid.UUID
    missed: uuid.UUID  # attempt 1 of OCCURRENCE: timed out
    answer: uuid.UUID  # attempt 2: the call that may connect (accepted or ringing)
    ringing: uuid.UUID  # attempt 3: a ringing sibling
    queued: uuid.UUID  # attempt 4: queued, its queue row not yet claimed
    queued_row: uuid.UUID
    claimed: uuid.UUID  # attempt 5: queued, its queue row held by a worker
    claimed_row: uuid.UUID
    alert: uuid.UUID  # the occurrence's missed_calls alert
    next_ringing: uuid.UUID  # NEXT_DAY attempt 1: ringing
    next_queued: uuid.UUID  # NEXT_DAY attempt 2: queued
    next_queued_row: uuid.UUID
    next_alert: uuid.UUID
    other_queued: uuid.UUID  # another schedule, OCCURRENCE, queued
    other_row: uuid.UUID
    other_alert: uuid.UUID
    other_kind: uuid.UUID  # another kind of alert about this occurrence


def occurrences(db: Conn, answer_status: str, queued_row_status: str) -> Occurrences:
    family = add_family(db)
    schedule = add_schedule(db, family)
    other = add_schedule(db, family)
    answer_times: dict[str, Any] = {"ringing_at": OCCURRENCE + timedelta(minutes=10)}
    if answer_status == "accepted":
        answer_times["answered_at"] = OCCURRENCE + timedelta(minutes=10, seconds=4)
    queued = add_session(db, family, schedule, OCCURRENCE, 4, "queued")
    claimed = add_session(db, family, schedule, OCCURRENCE, 5, "queued")
    next_queued = add_session(db, family, schedule, NEXT_DAY, 2, "queued")
    other_queued = add_session(db, family, other, OCCURRENCE, 1, "queued")
    return Occurrences(
        family=family,
        schedule=schedule,
        missed=add_session(db, family, schedule, OCCURRENCE, 1, "missed"),
        answer=add_session(db, family, schedule, OCCURRENCE, 2, answer_status, **answer_times),
        ringing=add_session(db, family, schedule, OCCURRENCE, 3, "ringing"),
        queued=queued,
        queued_row=add_queue_row(db, queued, queued_row_status),
        claimed=claimed,
        claimed_row=add_queue_row(db, claimed, "claimed"),
        # The alert a missed attempt raised names it (call_session_id) and the occurrence.
        alert=add_missed_alert(db, family, schedule, OCCURRENCE, None),
        next_ringing=add_session(db, family, schedule, NEXT_DAY, 1, "ringing"),
        next_queued=next_queued,
        next_queued_row=add_queue_row(db, next_queued, "queued"),
        next_alert=add_missed_alert(db, family, schedule, NEXT_DAY, None),
        other_queued=other_queued,
        other_row=add_queue_row(db, other_queued, "queued"),
        other_alert=add_missed_alert(db, family, other, OCCURRENCE, None),
        other_kind=add_missed_alert(db, family, schedule, OCCURRENCE, None, "call_expired"),
    )


def statuses(db: Conn, *ids: uuid.UUID) -> list[str]:
    return [session(db, i)["status"] for i in ids]


def assert_only_this_occurrence_withdrawn(db: Conn, o: Occurrences, by: uuid.UUID) -> None:
    now = row(db, "select now() as now")["now"]
    by_attempt = session(db, by)["attempt"]
    for withdrawn in (o.ringing, o.queued, o.claimed):
        r = session(db, withdrawn)
        assert (r["status"], r["failure_reason"]) == ("cancelled", WITHDRAWN.format(by_attempt))
        assert r["ended_at"] == now
        assert r["withdrawn_at"] is None  # history of an attempt, not an edit's withdrawal
    # The ringing sibling had rung: its ring time is kept.
    assert session(db, o.ringing)["ringing_at"] == OCCURRENCE
    # Queue rows nobody holds are cancelled with the reason; a claimed row is the worker's.
    q = row(db, "select * from notification_queue where id = %s", [o.queued_row])
    assert (q["status"], q["last_error"]) == ("cancelled", WITHDRAWN.format(by_attempt))
    claimed = row(db, "select * from notification_queue where id = %s", [o.claimed_row])
    assert (claimed["status"], claimed["locked_by"], claimed["last_error"]) == (
        "claimed",
        "worker-a",
        None,
    )
    # The schedule's next occurrence and the other schedule are untouched.
    assert statuses(db, o.next_ringing, o.next_queued, o.other_queued) == [
        "ringing",
        "queued",
        "queued",
    ]
    assert queue_status(db, o.next_queued_row) == "queued"
    assert queue_status(db, o.other_row) == "queued"
    # Only this occurrence's missed_calls alert is closed, naming the session that talked.
    closed = alert(db, o.alert)
    assert closed["acknowledged_at"] == now
    assert closed["details"]["resolved"] == "a conversation for this occurrence took place"
    assert closed["details"]["resolved_by_session"] == str(by)
    assert closed["details"]["attempts"] == 1  # what the alert said is kept
    for still_open in (o.next_alert, o.other_alert, o.other_kind):
        a = alert(db, still_open)
        assert a["acknowledged_at"] is None
        assert "resolved" not in a["details"]


def report(db: Conn, o: Occurrences, target: uuid.UUID, conv: str, at: int) -> dict[str, Any]:
    """A post-call report for `target` (matched by its call_session_id variable)."""
    return deliver(
        db,
        transcription_payload(
            conv,
            call_session_id=str(target),
            event_timestamp=at,
            start_time_unix_secs=unix(OCCURRENCE + timedelta(minutes=10, seconds=6)),
            duration_secs=60,
        ),
    )


def test_connected_withdraws_only_this_occurrences_unanswered_attempts(db: Conn) -> None:
    o = occurrences(db, "accepted", "queued")
    conv = conversation()
    result = event(
        db, o.family, o.answer, "connected", OCCURRENCE + timedelta(minutes=10, seconds=6), conv
    )
    assert result["status"] == "in_progress"
    assert_only_this_occurrence_withdrawn(db, o, o.answer)
    # A missed attempt is over: it keeps its state, reason and end.
    missed = session(db, o.missed)
    assert (missed["status"], missed["ended_at"]) == ("missed", OCCURRENCE + timedelta(seconds=45))


def test_a_webhook_completion_withdraws_only_this_occurrences_unanswered_attempts(
    db: Conn,
) -> None:
    # The timeout raced the answer: attempt 1 is missed, its retries queued and ringing, and
    # the report of its conversation arrives. A queue row already due is cancelled too.
    o = occurrences(db, "ringing", "due")
    result = report(db, o, o.missed, conversation(), unix(OCCURRENCE) + 600)
    assert result["status"] == "processed"
    assert session(db, o.missed)["status"] == "completed"
    # Attempt 2 was ringing: withdrawn like the other ringing sibling.
    answer = session(db, o.answer)
    assert (answer["status"], answer["failure_reason"]) == ("cancelled", WITHDRAWN.format(1))
    assert_only_this_occurrence_withdrawn(db, o, o.missed)


def test_an_occurrence_never_has_two_completed_attempts(db: Conn) -> None:
    o = occurrences(db, "accepted", "queued")
    stamp = unix(OCCURRENCE) + 600
    missed_conv = conversation()
    # Attempt 2 is answered: a report for the missed attempt 1 keeps it missed ...
    assert report(db, o, o.missed, missed_conv, stamp)["status"] == "processed"
    assert statuses(db, o.missed, o.answer) == ["missed", "accepted"]
    conv = conversation()
    event(db, o.family, o.answer, "connected", OCCURRENCE + timedelta(minutes=10, seconds=6), conv)
    # ... and so does a newer one while attempt 2 is in progress ...
    assert report(db, o, o.missed, missed_conv, stamp + 1)["status"] == "processed"
    assert statuses(db, o.missed, o.answer) == ["missed", "in_progress"]
    assert report(db, o, o.answer, conv, stamp + 2)["status"] == "processed"
    assert statuses(db, o.missed, o.answer) == ["missed", "completed"]
    # ... and once attempt 2 is completed.
    assert report(db, o, o.missed, missed_conv, stamp + 3)["status"] == "processed"
    assert statuses(db, o.missed, o.answer) == ["missed", "completed"]
    log = row(db, "select * from call_logs where call_session_id = %s", [o.missed])
    assert log["outcome"] == "missed"
    assert [d["detail"] for d in log["discrepancies"] if d["kind"] == "state"] == [
        "session is missed: attempt 2 of this occurrence is completed; the report was stored"
        " without changing it"
    ]
    completed = db.execute(
        "select id from call_sessions where schedule_id = %s and occurrence_at = %s"
        " and status = 'completed'",
        [o.schedule, OCCURRENCE],
    ).fetchall()
    assert completed == [{"id": o.answer}]


def test_a_call_now_conversation_closes_the_alert_of_its_own_session(db: Conn) -> None:
    # No schedule: the alert is found by its session alone, and nothing else is withdrawn.
    family = add_family(db)
    missed = add_session(db, family, None, OCCURRENCE, 1, "missed", max_attempts=1)
    other = add_session(db, family, None, OCCURRENCE, 1, "queued", max_attempts=1)
    own = add_missed_alert(db, family, None, OCCURRENCE, missed)
    foreign = add_missed_alert(db, family, None, OCCURRENCE + timedelta(hours=1), other)
    result = deliver(
        db,
        transcription_payload(
            conversation(),
            call_session_id=str(missed),
            start_time_unix_secs=unix(OCCURRENCE + timedelta(seconds=20)),
        ),
    )
    assert result["status"] == "processed"
    assert statuses(db, missed, other) == ["completed", "queued"]
    assert alert(db, own)["acknowledged_at"] is not None
    assert alert(db, own)["details"]["resolved_by_session"] == str(missed)
    assert alert(db, foreign)["acknowledged_at"] is None
