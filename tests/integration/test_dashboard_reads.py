"""The dashboard's read RPCs (upcoming_calls, call_history, open_alerts), as members and as
attackers, through the same roles and JWT claims PostgREST uses."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import LiteralString
from zoneinfo import ZoneInfo

import pytest
from psycopg import errors

from tests.support.db import Conn, acting_as, one
from tests.support.world import World, build_world

# 2031-03-30 is the day London springs forward (01:00 GMT -> 02:00 BST).
WINDOW = (datetime(2031, 3, 24, tzinfo=UTC), datetime(2031, 4, 6, 23, 59, tzinfo=UTC))


@pytest.fixture
def world(db: Conn) -> World:
    return build_world(db)


def member(world: World) -> uuid.UUID:
    return world.a.members["member_a"]


def expected_occurrences(
    local: time, days: set[int], zone: str, start: datetime, end: datetime
) -> list[datetime]:
    """The reference: Python's zoneinfo (fold=0), day by day."""
    tz = ZoneInfo(zone)
    found = []
    day: date = start.astimezone(tz).date() - timedelta(days=1)
    while day <= end.astimezone(tz).date() + timedelta(days=1):
        if day.isoweekday() in days:
            at = datetime.combine(day, local, tzinfo=tz).astimezone(UTC)
            if start <= at <= end:
                found.append(at)
        day += timedelta(days=1)
    return found


def upcoming(
    db: Conn, household: uuid.UUID, start: datetime, end: datetime
) -> list[dict[str, object]]:
    return db.execute(
        "select * from upcoming_calls(%s, %s, %s)", [household, start, end]
    ).fetchall()


def test_upcoming_calls_lists_every_occurrence_as_the_scheduler_computes_it(
    db: Conn, world: World
) -> None:
    # The world's schedule: Mon/Wed/Fri 09:30 in Europe/London, across the spring-forward.
    with acting_as(db, "authenticated", member(world)):
        rows = upcoming(db, world.a.id, *WINDOW)
    expected = expected_occurrences(time(9, 30), {1, 3, 5}, "Europe/London", *WINDOW)
    assert [r["occurrence_at"] for r in rows] == expected
    assert len(expected) == 6
    assert {r["local_time"].time() for r in rows} == {time(9, 30)}  # type: ignore[attr-defined]
    # 09:30 GMT before the change, 09:30 BST (08:30 UTC) after it.
    assert [r["occurrence_at"].hour for r in rows] == [9, 9, 9, 8, 8, 8]  # type: ignore[attr-defined]
    first = rows[0]
    assert first["schedule_id"] == world.a.schedule
    assert first["relative_id"] == world.a.relative
    assert first["relative_name"] == "Mum"
    assert first["timezone"] == "Europe/London"
    assert (first["call_session_id"], first["status"]) == (None, None)


def test_upcoming_calls_shows_the_state_of_queued_occurrences_latest_attempt(
    db: Conn, world: World
) -> None:
    occurrence = datetime(2031, 3, 26, 9, 30, tzinfo=UTC)  # a Wednesday, GMT
    first_try = one(
        db,
        """insert into call_sessions (household_id, relative_id, schedule_id, occurrence_at,
               status, ringing_at) values (%s, %s, %s, %s, 'missed', %s) returning id""",
        [world.a.id, world.a.relative, world.a.schedule, occurrence, occurrence],
    )["id"]
    retry = one(
        db,
        """insert into call_sessions (household_id, relative_id, schedule_id, occurrence_at,
               attempt, origin, status, ringing_at)
           values (%s, %s, %s, %s, 2, 'retry', 'ringing', %s) returning id""",
        [world.a.id, world.a.relative, world.a.schedule, occurrence, occurrence],
    )["id"]
    assert first_try != retry
    with acting_as(db, "authenticated", member(world)):
        rows = {r["occurrence_at"]: r for r in upcoming(db, world.a.id, *WINDOW)}
    assert (rows[occurrence]["call_session_id"], rows[occurrence]["attempt"]) == (retry, 2)
    assert rows[occurrence]["status"] == "ringing"
    assert sum(1 for r in rows.values() if r["status"] is not None) == 1


def test_upcoming_calls_leaves_out_paused_and_inactive_schedules(db: Conn, world: World) -> None:
    pause_end = datetime(2031, 4, 1, tzinfo=UTC)
    db.execute(
        "update schedules set paused_until = %s where id = %s", [pause_end, world.a.schedule]
    )
    with acting_as(db, "authenticated", member(world)):
        rows = upcoming(db, world.a.id, *WINDOW)
    assert rows
    assert all(r["occurrence_at"] >= pause_end for r in rows)  # type: ignore[operator]
    db.execute("update schedules set active = false where id = %s", [world.a.schedule])
    with acting_as(db, "authenticated", member(world)):
        assert upcoming(db, world.a.id, *WINDOW) == []


@pytest.mark.parametrize("actor", ["admin_b", "outsider", "nobody"])
def test_other_households_are_refused_alike_by_every_read(
    db: Conn, world: World, actor: str
) -> None:
    users = {"admin_b": world.b.members["admin_b"], "outsider": world.outsider}
    target = world.a.id if actor != "nobody" else uuid.uuid4()
    user = users.get(actor, member(world))
    calls: list[tuple[str, LiteralString, Sequence[object]]] = [
        ("upcoming_calls", "select * from upcoming_calls(%s, %s, %s)", [target, *WINDOW]),
        ("call_history", "select * from call_history(%s)", [target]),
        ("open_alerts", "select * from open_alerts(%s)", [target]),
    ]
    for name, query, params in calls:
        with (
            acting_as(db, "authenticated", user),
            pytest.raises(errors.InsufficientPrivilege) as refused,
        ):
            db.execute(query, params)
        assert refused.value.diag.message_primary == (
            f'invalid {name}.p_household_id: "{target}" is not a household of yours'
        )


def test_anon_may_not_call_the_reads(db: Conn, world: World) -> None:
    reads: list[tuple[LiteralString, Sequence[object]]] = [
        ("select * from upcoming_calls(%s, %s, %s)", [world.a.id, *WINDOW]),
        ("select * from call_history(%s)", [world.a.id]),
        ("select * from open_alerts(%s)", [world.a.id]),
    ]
    for query, params in reads:
        with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege, match="function"):
            db.execute(query, params)


def test_reads_run_with_the_callers_rights(db: Conn) -> None:
    rows = db.execute(
        """select proname, prosecdef from pg_proc where pronamespace = 'public'::regnamespace
           and proname in ('upcoming_calls', 'call_history', 'open_alerts') order by proname"""
    ).fetchall()
    assert rows == [
        {"proname": "call_history", "prosecdef": False},
        {"proname": "open_alerts", "prosecdef": False},
        {"proname": "upcoming_calls", "prosecdef": False},
    ]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            WINDOW[1],
            WINDOW[0],
            'invalid upcoming_calls.p_to: "2031-03-24 00:00:00+00" must not be before p_from',
        ),
        (WINDOW[0], WINDOW[0] + timedelta(days=63), "must be at most 62 days after p_from"),
        (None, WINDOW[1], "invalid upcoming_calls.p_from: must not be null"),
    ],
)
def test_upcoming_calls_refuses_a_bad_window_naming_the_field(
    db: Conn, world: World, start: datetime | None, end: datetime, message: str
) -> None:
    with (
        acting_as(db, "authenticated", member(world)),
        pytest.raises((errors.CheckViolation, errors.NotNullViolation), match=re.escape(message)),
    ):
        upcoming(db, world.a.id, start, end)  # type: ignore[arg-type]


def finish_calls(db: Conn, world: World, count: int) -> list[uuid.UUID]:
    """`count` finished sessions of household A, one hour apart, newest first."""
    start = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
    outcomes = ["completed", "missed", "declined", "failed", "expired", "cancelled"]
    ids = []
    for k in range(count):
        status = outcomes[k % len(outcomes)]
        ids.append(
            one(
                db,
                """insert into call_sessions (household_id, relative_id, schedule_id,
                       occurrence_at, status, attempt) values (%s, %s, %s, %s, %s, 1)
                   returning id""",
                [
                    world.a.id,
                    world.a.relative,
                    world.a.schedule,
                    start + timedelta(hours=k),
                    status,
                ],
            )["id"]
        )
    return list(reversed(ids))  # type: ignore[arg-type]


def test_call_history_pages_through_finished_calls_newest_first(db: Conn, world: World) -> None:
    newest_first = finish_calls(db, world, 7)
    db.execute(
        """insert into call_logs (call_session_id, household_id, relative_id, outcome, summary,
               duration_secs, mood, concerns) values (%s, %s, %s, 'completed', 'Fine day', 300,
               'cheerful', '{wellbeing_concern}')""",
        [newest_first[-1], world.a.id, world.a.relative],
    )
    seen: list[uuid.UUID] = []
    cursor: tuple[object, object] = (None, None)
    pages = 0
    with acting_as(db, "authenticated", member(world)):
        while True:
            page = db.execute(
                "select * from call_history(%s, 3, %s, %s)", [world.a.id, *cursor]
            ).fetchall()
            if not page:
                break
            pages += 1
            seen.extend(r["call_session_id"] for r in page)  # type: ignore[misc]
            cursor = (page[-1]["occurrence_at"], page[-1]["call_session_id"])
    assert pages == 3
    # The world's own sessions are still queued: not history.
    assert seen == newest_first
    with acting_as(db, "authenticated", member(world)):
        newest = one(db, "select * from call_history(%s, 1)", [world.a.id])
    assert newest["call_session_id"] == newest_first[0]
    with acting_as(db, "authenticated", member(world)):
        logged = one(
            db,
            "select * from call_history(%s, 200) where call_session_id = %s",
            [world.a.id, newest_first[-1]],
        )
    assert (logged["outcome"], logged["summary"], logged["duration_secs"]) == (
        "completed",
        "Fine day",
        300,
    )
    assert (logged["mood"], logged["concerns"]) == ("cheerful", ["wellbeing_concern"])
    assert logged["relative_name"] == "Mum"


def test_call_history_filters_by_relative_and_never_shows_another_household(
    db: Conn, world: World
) -> None:
    finish_calls(db, world, 2)
    with acting_as(db, "authenticated", member(world)):
        other = db.execute(
            "select * from call_history(%s, 50, null, null, %s)", [world.a.id, world.b.relative]
        ).fetchall()
        own = db.execute(
            "select * from call_history(%s, 50, null, null, %s)", [world.a.id, world.a.relative]
        ).fetchall()
    assert other == []
    assert len(own) == 2
    with acting_as(db, "service_role"):
        assert len(db.execute("select * from call_history(%s)", [world.a.id]).fetchall()) == 2


@pytest.mark.parametrize(
    ("limit", "before_at", "message"),
    [
        (0, None, 'invalid call_history.p_limit: "0" must be between 1 and 200'),
        (201, None, 'invalid call_history.p_limit: "201" must be between 1 and 200'),
        (10, WINDOW[0], 'invalid call_history.p_before_id: "null" must be given together with'),
    ],
)
def test_call_history_refuses_bad_paging_naming_the_field(
    db: Conn, world: World, limit: int, before_at: datetime | None, message: str
) -> None:
    with (
        acting_as(db, "authenticated", member(world)),
        pytest.raises(errors.CheckViolation, match=message),
    ):
        db.execute("select * from call_history(%s, %s, %s)", [world.a.id, limit, before_at])


def test_open_alerts_lists_unacknowledged_alerts_of_the_household(db: Conn, world: World) -> None:
    later = one(
        db,
        """insert into alerts (household_id, relative_id, kind, message, created_at)
           values (%s, %s, 'no_device', 'Mum has no device', now() + interval '1 minute')
           returning id""",
        [world.a.id, world.a.relative],
    )["id"]
    with acting_as(db, "authenticated", member(world)):
        before = [r["id"] for r in db.execute("select * from open_alerts(%s)", [world.a.id])]
        db.execute("select acknowledge_alert(%s)", [world.a.alert])
        after = [r["id"] for r in db.execute("select * from open_alerts(%s)", [world.a.id])]
        limited = db.execute("select * from open_alerts(%s, 1)", [world.a.id]).fetchall()
    assert before == [later, world.a.alert]
    assert after == [later]
    assert len(limited) == 1
    with (
        acting_as(db, "authenticated", member(world)),
        pytest.raises(errors.CheckViolation, match=r"invalid open_alerts.p_limit: \"0\""),
    ):
        db.execute("select * from open_alerts(%s, 0)", [world.a.id])
