"""The two-phase scheduler, driven deterministically through p_now (no wall clock)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from tests.support.db import Conn, acting_as, one
from tests.support.world import add_user, apns_token, fcm_token

T0 = datetime(2031, 1, 6, 0, 0, tzinfo=UTC)  # a Monday, far from the real clock
LEAD = timedelta(minutes=5)
GRACE = timedelta(minutes=2)


@dataclass
class Family:
    household: uuid.UUID
    relative: uuid.UUID
    device: uuid.UUID | None
    member: uuid.UUID


def add_family(
    conn: Conn,
    zone: str = "Europe/London",
    platform: str | None = "ios",
    *,
    voip: bool = True,
    fcm: bool = True,
) -> Family:
    household = one(conn, "insert into households (name) values ('The Testers') returning id")["id"]
    member = add_user(conn)
    conn.execute(
        "insert into household_members (household_id, user_id, role) values (%s, %s, 'member')",
        [household, member],
    )
    relative = one(
        conn,
        "insert into relatives (household_id, display_name, timezone) values (%s, 'Nan', %s) returning id",
        [household, zone],
    )["id"]
    device = None
    if platform is not None:
        device = one(
            conn,
            """insert into device_pairs (household_id, relative_id, status, platform, voip_token,
                   fcm_token, secret_hash, paired_at)
               values (%s, %s, 'active', %s, %s, %s, 'h', now()) returning id""",
            [
                household,
                relative,
                platform,
                apns_token() if voip and platform == "ios" else None,
                fcm_token() if fcm else None,
            ],
        )["id"]
    return Family(household, relative, device, member)  # type: ignore[arg-type]


def add_schedule(conn: Conn, family: Family, start: datetime = T0, **fields: Any) -> uuid.UUID:
    """A schedule planned as if created at `start` (next_run_at recomputed from there)."""
    values: dict[str, Any] = {
        "kind": "recurring",
        "local_time": time(9, 30),
        "days_of_week": [1, 2, 3, 4, 5, 6, 7],
    }
    values.update(fields)
    if values["kind"] == "one_off":
        values.pop("local_time")
        values.pop("days_of_week")
    columns = ["relative_id", *values]
    query = psycopg.sql.SQL("insert into schedules ({}) values ({}) returning id").format(
        psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
        psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(columns)),
    )
    schedule = one(conn, query, [family.relative, *values.values()])["id"]
    conn.execute("select reschedule(%s, %s)", [schedule, start])
    return schedule  # type: ignore[return-value]


def next_run(conn: Conn, schedule: object) -> object:
    return one(conn, "select next_run_at from schedules where id = %s", [schedule])["next_run_at"]


def phase1(conn: Conn, at: datetime) -> int:
    n = one(conn, "select queue_upcoming_calls(%s) as n", [at])["n"]
    assert isinstance(n, int)
    return n


def phase2(conn: Conn, at: datetime) -> int:
    n = one(conn, "select release_due_calls(%s) as n", [at])["n"]
    assert isinstance(n, int)
    return n


def sessions(conn: Conn, schedule: object) -> list[dict[str, Any]]:
    return conn.execute(
        "select * from call_sessions where schedule_id = %s order by occurrence_at, attempt",
        [schedule],
    ).fetchall()


def ring(conn: Conn, session_id: object, at: datetime) -> None:
    """What the worker does once the push went out."""
    conn.execute(
        "update notification_queue set status = 'sent', sent_at = %s where call_session_id = %s",
        [at, session_id],
    )
    conn.execute(
        "update call_sessions set status = 'ringing', ringing_at = %s where id = %s",
        [at, session_id],
    )


def zoneinfo_occurrences(
    zone: str, local: time, days: set[int], start: datetime, end: datetime
) -> list[datetime]:
    """Independent reference: Python's zoneinfo with fold=0, which is exactly our policy
    (first instant in an overlap, pre-transition offset — the shifted wall time — in a gap)."""
    tz = ZoneInfo(zone)
    day: date = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    found = []
    while day <= last:
        if day.isoweekday() in days:
            at = datetime.combine(day, local, tzinfo=tz).astimezone(UTC)
            if start < at <= end:
                found.append(at)
        day += timedelta(days=1)
    return found


# Local times chosen to hit each zone's spring-forward gap and fall-back overlap.
YEAR_CASES = {
    "Europe/London": [time(9, 30), time(1, 30), time(0, 59), time(2, 0)],
    "America/New_York": [time(9, 0), time(2, 30), time(1, 30), time(23, 59)],
    "Asia/Jakarta": [time(9, 30), time(0, 0)],
    "Australia/Lord_Howe": [time(9, 30), time(2, 15), time(1, 45), time(2, 0)],
    "Asia/Kathmandu": [time(9, 30), time(0, 15)],
}


@pytest.mark.parametrize("zone", sorted(YEAR_CASES))
def test_a_year_of_occurrences_matches_zoneinfo(db: Conn, zone: str) -> None:
    # Queue a day at a time so a year takes 366 phase-1 runs, not one per occurrence.
    db.execute("update private.scheduler_settings set lead_time = interval '1 day'")
    family = add_family(db, zone)
    weekdays = {1, 3, 5}
    cases = {
        add_schedule(db, family, local_time=t): (t, {1, 2, 3, 4, 5, 6, 7}) for t in YEAR_CASES[zone]
    }
    cases[add_schedule(db, family, local_time=time(10, 0), days_of_week=sorted(weekdays))] = (
        time(10, 0),
        weekdays,
    )
    for k in range(365):
        phase1(db, T0 + timedelta(days=k))
    end = T0 + timedelta(days=365)
    for schedule, (local, days) in cases.items():
        rows = sessions(db, schedule)
        got = [r["occurrence_at"] for r in rows]
        assert got == zoneinfo_occurrences(zone, local, days, T0, end), (zone, local)
        assert {r["status"] for r in rows} == {"queued"}


@pytest.mark.parametrize(
    ("zone", "local", "expected_utc"),
    [
        # Spring forward 01:00 -> 02:00: 01:30 does not exist; rings at 02:30 BST.
        ("Europe/London", "2031-03-30 01:30", "2031-03-30 01:30"),
        # Fall back 02:00 -> 01:00: 01:30 happens twice; rings at the first (BST).
        ("Europe/London", "2031-10-26 01:30", "2031-10-26 00:30"),
        ("Europe/London", "2031-10-26 02:30", "2031-10-26 02:30"),
        ("America/New_York", "2031-03-09 02:30", "2031-03-09 07:30"),
        ("America/New_York", "2031-11-02 01:30", "2031-11-02 05:30"),
        # Lord Howe moves by 30 minutes.
        ("Australia/Lord_Howe", "2031-10-05 02:15", "2031-10-04 15:45"),
        ("Australia/Lord_Howe", "2031-04-06 01:45", "2031-04-05 14:45"),
        ("Asia/Kathmandu", "2031-06-01 09:30", "2031-06-01 03:45"),
        ("Asia/Jakarta", "2031-06-01 09:30", "2031-06-01 02:30"),
    ],
)
def test_time_policy_examples(db: Conn, zone: str, local: str, expected_utc: str) -> None:
    row = one(db, "select private.local_to_instant(%s::timestamp, %s) as at", [local, zone])
    assert row["at"] == datetime.fromisoformat(expected_utc).replace(tzinfo=UTC)


def test_next_run_at_is_kept_current_on_insert_and_update(db: Conn) -> None:
    family = add_family(db, "America/New_York")
    schedule = one(
        db,
        "insert into schedules (relative_id, local_time, days_of_week) values (%s, '07:15', '{2,4}')"
        " returning id, next_run_at, now() as created",
        [family.relative],
    )
    start = schedule["created"]
    assert isinstance(start, datetime)
    [expected] = zoneinfo_occurrences(
        "America/New_York", time(7, 15), {2, 4}, start, start + timedelta(days=8)
    )[:1]
    assert schedule["next_run_at"] == expected

    db.execute(
        "update schedules set local_time = '20:45', days_of_week = '{6}' where id = %s",
        [schedule["id"]],
    )
    [expected] = zoneinfo_occurrences(
        "America/New_York", time(20, 45), {6}, start, start + timedelta(days=8)
    )[:1]
    assert next_run(db, schedule["id"]) == expected

    db.execute("update schedules set timezone = 'Asia/Kathmandu' where id = %s", [schedule["id"]])
    [expected] = zoneinfo_occurrences(
        "Asia/Kathmandu", time(20, 45), {6}, start, start + timedelta(days=8)
    )[:1]
    assert next_run(db, schedule["id"]) == expected

    db.execute("update schedules set active = false where id = %s", [schedule["id"]])
    assert next_run(db, schedule["id"]) is None
    db.execute("update schedules set active = true where id = %s", [schedule["id"]])
    assert next_run(db, schedule["id"]) == expected


def test_phase1_queues_with_a_device_snapshot_once(db: Conn) -> None:
    family = add_family(db, "Europe/London", "ios")
    schedule = add_schedule(db, family, local_time=time(9, 30))
    occurrence = datetime(2031, 1, 6, 9, 30, tzinfo=UTC)
    assert phase1(db, occurrence - LEAD - timedelta(seconds=1)) == 0  # not yet within the lead
    assert phase1(db, occurrence - LEAD) == 1
    assert phase1(db, occurrence - LEAD) == 0  # idempotent
    [session] = sessions(db, schedule)
    assert session["status"] == "queued"
    assert session["attempt"] == 1
    assert session["device_id"] == family.device
    device = one(
        db, "select voip_token, fcm_token from device_pairs where id = %s", [family.device]
    )
    queue = one(db, "select * from notification_queue where call_session_id = %s", [session["id"]])
    assert queue["send_at"] == occurrence
    assert queue["deadline_at"] == occurrence + GRACE
    assert (queue["provider"], queue["push_token"]) == ("apns", device["voip_token"])
    assert (queue["fallback_provider"], queue["fallback_token"]) == ("fcm", device["fcm_token"])
    assert queue["payload"] == {
        "relative_name": "Nan",
        "household_name": "The Testers",
        "title": None,
        "ring_timeout_ms": 45000,
    }
    assert next_run(db, schedule) == occurrence + timedelta(days=1)


@pytest.mark.parametrize(
    ("platform", "voip", "fcm", "expected"),
    [
        ("ios", True, True, ("apns", "fcm")),
        ("ios", True, False, ("apns", None)),
        ("ios", False, True, ("fcm", None)),
        ("android", False, True, ("fcm", None)),
    ],
)
def test_token_choice_per_platform(
    db: Conn, platform: str, voip: bool, fcm: bool, expected: tuple[str, str | None]
) -> None:
    family = add_family(db, "UTC", platform, voip=voip, fcm=fcm)
    add_schedule(db, family, local_time=time(9, 0))
    phase1(db, datetime(2031, 1, 6, 8, 58, tzinfo=UTC))
    row = one(
        db,
        "select provider, fallback_provider from notification_queue where household_id = %s",
        [family.household],
    )
    assert (row["provider"], row["fallback_provider"]) == expected


def test_invalidated_token_is_not_used(db: Conn) -> None:
    family = add_family(db, "UTC", "ios")
    db.execute(
        "update device_pairs set voip_token_invalidated_at = now(), voip_token_invalid_reason = 'Unregistered' where id = %s",
        [family.device],
    )
    add_schedule(db, family, local_time=time(9, 0))
    phase1(db, datetime(2031, 1, 6, 8, 58, tzinfo=UTC))
    row = one(
        db,
        "select provider, fallback_provider from notification_queue where household_id = %s",
        [family.household],
    )
    assert (row["provider"], row["fallback_provider"]) == ("fcm", None)


@pytest.mark.parametrize(
    ("platform", "voip", "fcm", "kind", "reason"),
    [
        (None, False, False, "no_device", "no active paired device"),
        ("android", False, False, "invalid_token", "the paired device has no valid push token"),
        ("ios", False, False, "invalid_token", "the paired device has no valid push token"),
    ],
)
def test_unreachable_relative_gives_failed_session_and_alert(
    db: Conn, platform: str | None, voip: bool, fcm: bool, kind: str, reason: str
) -> None:
    family = add_family(db, "Europe/London", platform, voip=voip, fcm=fcm)
    schedule = add_schedule(db, family, local_time=time(9, 30))
    assert phase1(db, datetime(2031, 1, 6, 9, 26, tzinfo=UTC)) == 1
    [session] = sessions(db, schedule)
    assert (session["status"], session["failure_reason"]) == ("failed", reason)
    assert (
        one(
            db,
            "select count(*) as n from notification_queue where household_id = %s",
            [family.household],
        )["n"]
        == 0
    )
    alert = one(
        db, "select kind, severity, message from alerts where call_session_id = %s", [session["id"]]
    )
    assert alert["kind"] == kind
    assert alert["severity"] == "critical"
    assert alert["message"] == f"Nan's call at Mon 06 Jan 09:30 did not ring: {reason}"
    # The schedule carries on with the next occurrence.
    assert next_run(db, schedule) == datetime(2031, 1, 7, 9, 30, tzinfo=UTC)


def test_missed_calls_are_retried_then_escalated(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(
        db, family, local_time=time(9, 0), max_attempts=3, retry_interval=timedelta(minutes=10)
    )
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    send_at = occurrence
    for attempt in (1, 2, 3):
        assert phase2(db, send_at) == 1  # released exactly on time
        current = sessions(db, schedule)[-1]
        assert current["attempt"] == attempt
        ring(db, current["id"], send_at)
        assert phase2(db, send_at + timedelta(seconds=45)) == 0  # still within the ring timeout
        phase2(db, send_at + timedelta(seconds=46))
        assert (
            one(db, "select status from call_sessions where id = %s", [current["id"]])["status"]
            == "missed"
        )
        send_at = send_at + timedelta(seconds=45) + timedelta(minutes=10)
    rows = sessions(db, schedule)
    assert [(r["attempt"], r["origin"], r["status"]) for r in rows] == [
        (1, "schedule", "missed"),
        (2, "retry", "missed"),
        (3, "retry", "missed"),
    ]
    assert len({r["id"] for r in rows}) == 3  # each attempt is a new call for CallKit
    retry_send = db.execute(
        "select attempt, send_at from notification_queue where schedule_id = %s order by attempt",
        [schedule],
    ).fetchall()
    assert [r["send_at"] for r in retry_send] == [
        occurrence,
        occurrence + timedelta(minutes=10, seconds=45),
        occurrence + timedelta(minutes=21, seconds=30),
    ]
    alerts = db.execute(
        "select kind, message, details from alerts where household_id = %s", [family.household]
    ).fetchall()
    assert len(alerts) == 1
    assert alerts[0]["kind"] == "missed_calls"
    assert alerts[0]["message"] == "Nan did not answer 3 calls at Mon 06 Jan 09:00"
    phase2(db, send_at + timedelta(hours=1))
    assert len(sessions(db, schedule)) == 3  # nothing after the last attempt


def test_declined_call_is_not_retried(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0), max_attempts=3)
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    phase2(db, occurrence)
    [session] = sessions(db, schedule)
    ring(db, session["id"], occurrence)
    db.execute(
        "update call_sessions set status = 'declined', ended_at = %s where id = %s",
        [occurrence, session["id"]],
    )
    phase2(db, occurrence + timedelta(hours=2))
    assert [r["status"] for r in sessions(db, schedule)] == ["declined"]
    assert (
        one(db, "select count(*) as n from alerts where household_id = %s", [family.household])["n"]
        == 0
    )


def test_single_attempt_schedule_alerts_after_one_miss(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0), max_attempts=1)
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    [session] = sessions(db, schedule)
    ring(db, session["id"], occurrence)
    phase2(db, occurrence + timedelta(minutes=1))
    assert [r["status"] for r in sessions(db, schedule)] == ["missed"]
    alert = one(db, "select message from alerts where household_id = %s", [family.household])
    assert alert["message"] == "Nan did not answer 1 call at Mon 06 Jan 09:00"


def test_retry_with_the_device_gone_fails_and_alerts(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0), max_attempts=2)
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    ring(db, sessions(db, schedule)[0]["id"], occurrence)
    db.execute(
        "update device_pairs set status = 'revoked', revoked_at = now() where id = %s",
        [family.device],
    )
    phase2(db, occurrence + timedelta(minutes=1))
    rows = sessions(db, schedule)
    assert [(r["attempt"], r["status"], r["failure_reason"]) for r in rows] == [
        (1, "missed", "not answered within the ring timeout"),
        (2, "failed", "no active paired device"),
    ]
    assert (
        one(db, "select kind from alerts where call_session_id = %s", [rows[1]["id"]])["kind"]
        == "no_device"
    )


def test_paused_and_inactive_schedules_do_not_ring(db: Conn) -> None:
    family = add_family(db, "UTC")
    paused = add_schedule(
        db, family, local_time=time(9, 0), paused_until=T0 + timedelta(days=2, hours=10)
    )
    inactive = add_schedule(db, family, local_time=time(9, 0), active=False)
    for day in range(4):
        phase1(db, T0 + timedelta(days=day, hours=8, minutes=56))
    assert [r["occurrence_at"] for r in sessions(db, paused)] == [T0 + timedelta(days=3, hours=9)]
    assert sessions(db, inactive) == []
    assert next_run(db, inactive) is None


def test_one_off_schedule_rings_once(db: Conn) -> None:
    family = add_family(db, "Asia/Kathmandu")
    run_at = datetime(2031, 2, 3, 4, 5, tzinfo=UTC)
    schedule = add_schedule(db, family, kind="one_off", run_at=run_at)
    assert next_run(db, schedule) == run_at
    assert phase1(db, run_at - LEAD) == 1
    assert phase1(db, run_at + timedelta(days=1)) == 0
    assert [r["occurrence_at"] for r in sessions(db, schedule)] == [run_at]
    assert next_run(db, schedule) is None


def test_deadline_expiry_expires_queue_row_and_session(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0))
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    assert phase2(db, occurrence) == 1
    phase2(db, occurrence + GRACE)  # at the deadline: still sendable
    [session] = sessions(db, schedule)
    assert session["status"] == "queued"
    phase2(db, occurrence + GRACE + timedelta(seconds=1))
    [session] = sessions(db, schedule)
    assert session["status"] == "expired"
    assert (
        one(
            db, "select status from notification_queue where call_session_id = %s", [session["id"]]
        )["status"]
        == "expired"
    )
    alert = one(db, "select kind, message from alerts where call_session_id = %s", [session["id"]])
    assert alert == {
        "kind": "call_expired",
        "message": "Nan's call at Mon 06 Jan 09:00 could not be sent in time",
    }


def test_expired_lease_returns_the_row_and_a_live_lease_is_left_alone(db: Conn) -> None:
    family = add_family(db, "UTC")
    add_schedule(db, family, local_time=time(9, 0))
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    phase2(db, occurrence)
    db.execute(
        "update notification_queue set status = 'claimed', locked_by = 'worker-1', locked_until = %s where household_id = %s",
        [occurrence + timedelta(seconds=30), family.household],
    )
    phase2(db, occurrence + timedelta(seconds=30))  # lease still valid at its last instant
    row = one(
        db,
        "select status, locked_by from notification_queue where household_id = %s",
        [family.household],
    )
    assert row == {"status": "claimed", "locked_by": "worker-1"}
    phase2(db, occurrence + timedelta(seconds=31))
    row = one(
        db,
        "select status, locked_by, locked_until, last_error from notification_queue where household_id = %s",
        [family.household],
    )
    assert row == {
        "status": "due",
        "locked_by": None,
        "locked_until": None,
        "last_error": "lease of worker-1 expired",
    }


def test_downtime_records_missed_occurrences_as_expired_and_continues(db: Conn) -> None:
    family = add_family(db, "Europe/London")
    schedule = add_schedule(db, family, local_time=time(9, 30))
    # The scheduler was down from Monday 00:00 until Wednesday 09:27.
    back = datetime(2031, 1, 8, 9, 27, tzinfo=UTC)
    assert phase1(db, back) == 3
    rows = sessions(db, schedule)
    assert [(r["occurrence_at"].day, r["status"]) for r in rows] == [
        (6, "expired"),
        (7, "expired"),
        (8, "queued"),
    ]
    assert (
        one(db, "select count(*) as n from notification_queue where schedule_id = %s", [schedule])[
            "n"
        ]
        == 1
    )
    kinds = db.execute(
        "select kind from alerts where household_id = %s", [family.household]
    ).fetchall()
    assert [k["kind"] for k in kinds] == ["call_expired", "call_expired"]
    assert next_run(db, schedule) == datetime(2031, 1, 9, 9, 30, tzinfo=UTC)


def test_call_now_is_due_at_once_and_not_doubled(db: Conn) -> None:
    family = add_family(db, "UTC")
    with acting_as(db, "authenticated", family.member):
        session_id = one(db, "select request_call_now(%s) as id", [family.relative])["id"]
        with (
            pytest.raises(errors.RaiseException, match="a call to Nan is already under way"),
            db.transaction(),
        ):
            db.execute("select request_call_now(%s)", [family.relative])
        db.execute("reset role")  # inspect as the service would, inside the same savepoint
        session = one(
            db,
            "select origin, status, attempt, max_attempts from call_sessions where id = %s",
            [session_id],
        )
        assert session == {
            "origin": "call_now",
            "status": "queued",
            "attempt": 1,
            "max_attempts": 1,
        }
        queue = one(
            db,
            "select status, send_at = now() as now, provider from notification_queue where call_session_id = %s",
            [session_id],
        )
        assert queue == {"status": "due", "now": True, "provider": "apns"}


def test_call_now_refuses_strangers_and_unreachable_relatives(db: Conn) -> None:
    family = add_family(db, "UTC")
    stranger = add_user(db)
    with (
        acting_as(db, "authenticated", stranger),
        pytest.raises(errors.NoDataFound, match="not found"),
    ):
        db.execute("select request_call_now(%s)", [family.relative])
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select request_call_now(%s)", [family.relative])
    lonely = add_family(db, "UTC", platform=None)
    with (
        acting_as(db, "authenticated", lonely.member),
        pytest.raises(errors.RaiseException, match="Nan cannot be called: no active paired device"),
    ):
        db.execute("select request_call_now(%s)", [lonely.relative])
    assert (
        one(
            db,
            "select count(*) as n from call_sessions where relative_id in (%s, %s)",
            [family.relative, lonely.relative],
        )["n"]
        == 0
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days_of_week": [0, 7]}, 'invalid schedules.days_of_week: "{0,7}"'),
        (
            {"timezone": "Moon/Tranquility"},
            'invalid schedules.timezone: unknown time zone "Moon/Tranquility"',
        ),
        (
            {"ring_timeout": timedelta(minutes=3)},
            'invalid schedules.ring_timeout: "00:03:00" is out of range',
        ),
        (
            {"max_attempts": 9},
            'invalid schedules.max_attempts: "9" is out of range: must be between 1 and 5',
        ),
        (
            {"kind": "one_off", "run_at": datetime(2020, 1, 1, tzinfo=UTC)},
            'invalid schedules.run_at: "2020-01-01 00:00:00+00" is in the past',
        ),
    ],
)
def test_bad_schedules_are_refused_clearly(db: Conn, fields: dict[str, Any], message: str) -> None:
    family = add_family(db, "UTC")
    db.execute("set local timezone = 'UTC'")
    with pytest.raises(errors.CheckViolation) as caught, db.transaction():
        add_schedule(db, family, **fields)
    assert message in str(caught.value)


def test_members_cannot_run_the_phases(db: Conn) -> None:
    family = add_family(db, "UTC")
    for function in ("queue_upcoming_calls", "release_due_calls", "cleanup_finished"):
        with (
            acting_as(db, "authenticated", family.member),
            pytest.raises(errors.InsufficientPrivilege),
        ):
            db.execute(psycopg.sql.SQL("select {}()").format(psycopg.sql.Identifier(function)))


def test_cleanup_deletes_only_old_finished_rows(db: Conn) -> None:
    family = add_family(db, "UTC")
    add_schedule(db, family, local_time=time(9, 0))
    phase1(db, datetime(2031, 1, 6, 8, 56, tzinfo=UTC))
    phase1(db, datetime(2031, 1, 7, 8, 56, tzinfo=UTC))
    rows = db.execute(
        "select id from notification_queue where household_id = %s order by send_at",
        [family.household],
    ).fetchall()
    db.execute("update notification_queue set status = 'sent' where id = %s", [rows[0]["id"]])
    now = one(db, "select now() as now")["now"]
    assert isinstance(now, datetime)
    assert one(db, "select cleanup_finished(%s) as n", [now + timedelta(days=29)])["n"] == 0
    assert one(db, "select cleanup_finished(%s) as n", [now + timedelta(days=31)])["n"] == 1
    remaining = db.execute(
        "select id from notification_queue where household_id = %s", [family.household]
    ).fetchall()
    assert remaining == [rows[1]]  # the unfinished row stays, and every session stays
    assert (
        one(
            db,
            "select count(*) as n from call_sessions where household_id = %s",
            [family.household],
        )["n"]
        == 2
    )


def test_phases_run_as_the_service_role(db: Conn) -> None:
    """What operators without pg_cron do: call the phases as service_role (RLS bypassed, but
    every grant they need must exist)."""
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0), max_attempts=2)
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    with acting_as(db, "service_role"):
        assert phase1(db, occurrence - LEAD) == 1
        assert phase2(db, occurrence) == 1
        ring(db, sessions(db, schedule)[0]["id"], occurrence)
        phase2(db, occurrence + timedelta(minutes=1))  # missed: queues the retry
        assert [r["status"] for r in sessions(db, schedule)] == ["missed", "queued"]
        assert one(db, "select cleanup_finished() as n")["n"] == 0


def queued_call(db: Conn, family: Family, **fields: Any) -> tuple[uuid.UUID, dict[str, Any]]:
    schedule = add_schedule(db, family, **fields)
    phase1(db, datetime(2031, 1, 6, 9, 26, tzinfo=UTC))
    [session] = sessions(db, schedule)
    return schedule, session


def queue_status(db: Conn, session_id: object) -> tuple[object, object]:
    row = one(
        db,
        """select q.status as q, c.status as c from notification_queue q
           join call_sessions c on c.id = q.call_session_id where c.id = %s""",
        [session_id],
    )
    return row["q"], row["c"]


@pytest.mark.parametrize(
    "change",
    [
        "active = false",
        "paused_until = '2031-01-07 10:00+00'",
        "local_time = '09:45'",
        "days_of_week = '{2}'",
    ],
)
def test_a_change_withdraws_queued_calls_it_no_longer_wants(db: Conn, change: str) -> None:
    family = add_family(db, "UTC")
    schedule, session = queued_call(db, family, local_time=time(9, 30))
    with acting_as(db, "authenticated", family.member):  # members may edit schedules
        db.execute(
            psycopg.sql.SQL("update schedules set {} where id = %s").format(
                psycopg.sql.SQL(change)
            ),
            [schedule],
        )
        db.execute("reset role")
        assert queue_status(db, session["id"]) == ("cancelled", "cancelled")


def test_a_change_keeps_queued_calls_that_still_fit_and_does_not_double_them(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule, session = queued_call(db, family, local_time=time(9, 30), days_of_week=[1])
    db.execute("update schedules set days_of_week = '{1,2,3}' where id = %s", [schedule])
    db.execute("select reschedule(%s, %s)", [schedule, datetime(2031, 1, 6, 9, 27, tzinfo=UTC)])
    assert queue_status(db, session["id"]) == ("queued", "queued")
    phase1(db, datetime(2031, 1, 6, 9, 27, tzinfo=UTC))
    assert [r["occurrence_at"] for r in sessions(db, schedule)] == [
        datetime(2031, 1, 6, 9, 30, tzinfo=UTC)
    ]


def test_retimed_schedule_queues_its_new_time(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule, _ = queued_call(db, family, local_time=time(9, 30))
    db.execute("update schedules set local_time = '09:45' where id = %s", [schedule])
    db.execute("select reschedule(%s, %s)", [schedule, datetime(2031, 1, 6, 9, 27, tzinfo=UTC)])
    phase1(db, datetime(2031, 1, 6, 9, 41, tzinfo=UTC))
    rows = sessions(db, schedule)
    assert [(r["occurrence_at"].strftime("%H:%M"), r["status"]) for r in rows] == [
        ("09:30", "cancelled"),
        ("09:45", "queued"),
    ]


def test_deleting_a_schedule_withdraws_its_queued_calls_and_keeps_history(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule, session = queued_call(db, family, local_time=time(9, 30))
    db.execute("delete from schedules where id = %s", [schedule])
    assert queue_status(db, session["id"]) == ("cancelled", "cancelled")
    assert one(
        db, "select schedule_id, failure_reason from call_sessions where id = %s", [session["id"]]
    ) == {"schedule_id": None, "failure_reason": "the schedule was deleted"}


def test_a_claimed_call_is_left_to_its_worker(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule, session = queued_call(db, family, local_time=time(9, 30))
    db.execute(
        "update notification_queue set status = 'claimed', locked_by = 'w1', locked_until = now() where call_session_id = %s",
        [session["id"]],
    )
    db.execute("update schedules set active = false where id = %s", [schedule])
    assert queue_status(db, session["id"]) == ("claimed", "queued")


def test_no_retry_once_the_schedule_is_paused(db: Conn) -> None:
    family = add_family(db, "UTC")
    schedule = add_schedule(db, family, local_time=time(9, 0), max_attempts=3)
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    phase1(db, occurrence - LEAD)
    ring(db, sessions(db, schedule)[0]["id"], occurrence)
    db.execute("update schedules set paused_until = '2031-02-01' where id = %s", [schedule])
    phase2(db, occurrence + timedelta(minutes=1))
    assert [r["status"] for r in sessions(db, schedule)] == ["missed"]


def test_an_occurrence_at_the_end_of_a_pause_rings(db: Conn) -> None:
    family = add_family(db, "UTC")
    end = datetime(2031, 1, 8, 9, 0, tzinfo=UTC)
    schedule = add_schedule(db, family, local_time=time(9, 0), paused_until=end)
    assert next_run(db, schedule) == end


def test_ringing_needs_the_time_it_started(db: Conn) -> None:
    family = add_family(db, "UTC")
    _, session = queued_call(db, family, local_time=time(9, 30))
    with (
        pytest.raises(errors.CheckViolation, match="call_sessions_ringing_check"),
        db.transaction(),
    ):
        db.execute("update call_sessions set status = 'ringing' where id = %s", [session["id"]])


def test_call_now_while_a_retry_waits_but_not_while_ringing(db: Conn) -> None:
    family = add_family(db, "UTC")
    now = one(db, "select now() as now")["now"]
    assert isinstance(now, datetime)
    run_at = now + timedelta(minutes=2)
    schedule = add_schedule(
        db,
        family,
        start=now,
        kind="one_off",
        run_at=run_at,
        max_attempts=2,
        retry_interval=timedelta(hours=1),
    )
    phase1(db, now)
    [first] = sessions(db, schedule)
    ring(db, first["id"], now)
    with (
        acting_as(db, "authenticated", family.member),
        pytest.raises(errors.RaiseException, match="already under way"),
    ):
        db.execute("select request_call_now(%s)", [family.relative])
    phase2(db, now + timedelta(minutes=1))  # missed; the retry waits an hour
    assert [r["status"] for r in sessions(db, schedule)] == ["missed", "queued"]
    with acting_as(db, "authenticated", family.member):
        assert one(db, "select request_call_now(%s) as id", [family.relative])["id"] is not None


# Tests below commit, so they clean up after themselves ---------------------------------------


@pytest.fixture
def committed(database_url: str) -> Any:
    """An autocommit connection; households created through it are deleted afterwards."""
    created: list[object] = []
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn, created
        for household in created:
            conn.execute("delete from households where id = %s", [household])


def test_phase1_from_two_connections_at_once_queues_each_occurrence_once(
    committed: Any, database_url: str
) -> None:
    conn, created = committed
    families = [add_family(conn, "UTC") for _ in range(3)]
    created.extend(f.household for f in families)
    for family in families:
        add_schedule(conn, family, local_time=time(9, 0))
        add_schedule(conn, family, local_time=time(9, 2))
    at = datetime(2031, 1, 6, 8, 57, tzinfo=UTC)
    with (
        psycopg.connect(database_url, row_factory=dict_row) as first,
        psycopg.connect(database_url, row_factory=dict_row) as second,
    ):
        first_count = phase1(first, at)  # holds its locks: not committed yet
        second_count = phase1(second, at)  # runs meanwhile, skips what the first holds
        second.commit()
        first.commit()
        again = phase1(second, at)
        second.commit()
    assert (first_count, second_count, again) == (6, 0, 0)
    # Even with next_run_at rewound, the unique key stops a second copy.
    for family in families:
        for schedule in conn.execute(
            "select id from schedules where relative_id = %s", [family.relative]
        ).fetchall():
            conn.execute("select reschedule(%s, %s)", [schedule["id"], T0])
    assert phase1(conn, at) == 0
    counts = conn.execute(
        """select s.id, count(c.id) as sessions, count(q.id) as queued from schedules s
           left join call_sessions c on c.schedule_id = s.id
           left join notification_queue q on q.call_session_id = c.id
           where s.household_id = any(%s) group by s.id""",
        [[f.household for f in families]],
    ).fetchall()
    assert len(counts) == 6
    assert all(r["sessions"] == 1 and r["queued"] == 1 for r in counts)


def test_workers_are_notified_when_rows_are_queued_and_released(
    committed: Any, database_url: str
) -> None:
    conn, created = committed
    family = add_family(conn, "UTC")
    created.append(family.household)
    add_schedule(conn, family, local_time=time(9, 0))
    occurrence = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen callpanion_queue")
        phase1(conn, occurrence - LEAD)
        phase2(conn, occurrence)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    events = [json.loads(p) for p in payloads]
    assert events[0] == {"event": "queued", "count": 1, "earliest": "2031-01-06T09:00:00+00:00"}
    assert events[1]["event"] == "due"
    assert events[1]["count"] >= 1
    assert all(len(p) < 200 for p in payloads)


def test_pg_cron_runs_both_phases_on_the_local_stack(committed: Any, database_url: str) -> None:
    """The one test that depends on the wall clock: pg_cron fires at the next minute boundary.

    It waits for the phases' own NOTIFYs (no polling): phase 1 queues a one-off due in three
    minutes, phase 2 releases a row whose time has come.
    """
    conn, created = committed
    family = add_family(conn, "UTC")
    created.append(family.household)
    now = one(conn, "select now() as now")["now"]
    assert isinstance(now, datetime)
    soon = (now + timedelta(minutes=3)).replace(second=0, microsecond=0)
    schedule = one(
        conn,
        "insert into schedules (relative_id, kind, run_at) values (%s, 'one_off', %s) returning id",
        [family.relative, soon],
    )["id"]
    waiting = one(
        conn,
        """insert into call_sessions (household_id, relative_id, device_id, occurrence_at, origin)
           values (%s, %s, %s, now(), 'call_now') returning id""",
        [family.household, family.relative, family.device],
    )["id"]
    conn.execute(
        """insert into notification_queue (call_session_id, household_id, device_id, occurrence_at,
               send_at, deadline_at, platform, provider, push_token)
           values (%s, %s, %s, now(), now(), now() + interval '10 minutes', 'ios', 'apns', %s)""",
        [waiting, family.household, family.device, apns_token()],
    )
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen callpanion_queue")
        conn.execute(
            "select cron.alter_job(jobid, active := true) from cron.job"
            " where jobname like 'callpanion-phase%%'"
        )
        try:
            events: dict[str, int] = {}
            for note in listener.notifies(timeout=75):
                event = json.loads(note.payload)["event"]
                if note.pid != conn.info.backend_pid:
                    events.setdefault(event, note.pid)
                if {"queued", "due"} <= set(events):
                    break
        finally:
            conn.execute(
                "select cron.alter_job(jobid, active := false) from cron.job"
                " where jobname like 'callpanion-phase%%'"
            )
    assert set(events) >= {"queued", "due"}, events
    [session] = sessions(conn, schedule)
    assert (session["status"], session["occurrence_at"]) == ("queued", soon)
    released = one(
        conn, "select status from notification_queue where call_session_id = %s", [waiting]
    )
    assert released["status"] == "due"
