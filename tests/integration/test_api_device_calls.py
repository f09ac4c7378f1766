"""GET /v1/devices/me/calls: the device's upcoming calls, for the app's reminder screen.

The rows are the dashboard's upcoming_calls for the device's relative (the same SQL, called,
not copied), and nobody else's: another device, a revoked one and a bad window get nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.support.api import (
    Family,
    Paired,
    Row,
    ServedApi,
    bearer,
    fetch,
    new_family,
    new_session,
    pair,
)

SqlConn = psycopg.Connection[Row]
NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = NOW, NOW + timedelta(days=7)


def _daily(conn: SqlConn, relative: uuid.UUID, local: str, title: str) -> uuid.UUID:
    schedule: uuid.UUID = fetch(
        conn,
        "insert into schedules (relative_id, local_time, days_of_week, title)"
        " values (%s, %s, '{1,2,3,4,5,6,7}', %s) returning id",
        [relative, local, title],
    )["id"]
    return schedule


def _second_relative(conn: SqlConn, family: Family, name: str) -> Family:
    relative = fetch(
        conn,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, %s, 'Europe/London') returning id",
        [family.household, name],
    )["id"]
    return Family(family.household, family.admin, family.member, relative, name)


def _get(api: ServedApi, device: Paired, **params: str) -> Any:
    return api.client.get("/v1/devices/me/calls", params=params, headers=device.headers)


def _window() -> dict[str, str]:
    return {"from": FROM.isoformat(), "to": TO.isoformat()}


def test_the_device_gets_its_relatives_calls_as_the_dashboard_sees_them(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn, "Nan")
    other = _second_relative(sql_conn, family, "Grandpa")  # same household, own phone
    schedule = _daily(sql_conn, family.relative, "09:30", "Morning chat")
    _daily(sql_conn, other.relative, "10:00", "Grandpa's call")
    device = pair(api, sql_conn, family, "android")
    pair(api, sql_conn, other, "ios")
    # One occurrence already queued: its session id (the CallKit id) and state are shown.
    first = fetch(
        sql_conn,
        "select o.occurrence_at from upcoming_calls(%s, %s, %s) o where o.schedule_id = %s"
        " order by o.occurrence_at limit 1",
        [family.household, FROM, TO, schedule],
    )["occurrence_at"]
    session = new_session(sql_conn, family, device.id, "queued", schedule_id=schedule,
                          origin="schedule", occurrence_at=first)  # fmt: skip

    response = _get(api, device, **_window())
    assert response.status_code == 200, response.text
    body = response.json()
    dashboard = sql_conn.execute(
        "select * from upcoming_calls(%s, %s, %s) where relative_id = %s",
        [family.household, FROM, TO, family.relative],
    ).fetchall()
    assert len(dashboard) == 7
    assert [
        (c["schedule_id"], c["occurrence_at"], c["call_session_id"], c["status"])
        for c in body["calls"]
    ] == [
        (
            str(r["schedule_id"]),
            r["occurrence_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
            str(r["call_session_id"]) if r["call_session_id"] else None,
            r["status"],
        )
        for r in dashboard
    ]
    assert body["calls"][0]["call_session_id"] == str(session)
    assert body["calls"][0]["status"] == "queued"
    assert body["calls"][0]["schedule_title"] == "Morning chat"
    assert body["calls"][0]["timezone"] == "Europe/London"
    assert body["calls"][0]["local_time"].endswith("09:30:00")


def test_defaults_to_the_next_seven_days(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    _daily(sql_conn, family.relative, "12:00", "Lunch")
    device = pair(api, sql_conn, family, "android")
    body = _get(api, device).json()
    start = datetime.fromisoformat(body["from"])
    assert datetime.fromisoformat(body["to"]) - start == timedelta(days=7)
    assert len(body["calls"]) == 7


def test_another_device_never_sees_these_calls(api: ServedApi, sql_conn: SqlConn) -> None:
    family, stranger = new_family(sql_conn, "Nan"), new_family(sql_conn, "Stranger")
    _daily(sql_conn, family.relative, "09:30", "Morning chat")
    pair(api, sql_conn, family, "android")
    theirs = pair(api, sql_conn, stranger, "android")
    body = _get(api, theirs, **_window()).json()
    assert body["calls"] == []  # the stranger's relative has no schedule; ours never leak


def test_a_revoked_or_unknown_device_or_a_wrong_secret_gets_401(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    _daily(sql_conn, family.relative, "09:30", "Morning chat")
    old = pair(api, sql_conn, family, "android")
    pair(api, sql_conn, family, "ios")  # pairing a new phone revokes the old one
    revoked = _get(api, old, **_window())
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]
    wrong = api.client.get("/v1/devices/me/calls", headers=bearer(old.id, "x" * 43))
    unknown = api.client.get("/v1/devices/me/calls", headers=bearer(uuid.uuid4(), "x" * 43))
    anonymous = api.client.get("/v1/devices/me/calls")
    assert (wrong.status_code, unknown.status_code, anonymous.status_code) == (401, 401, 401)
    assert wrong.json() == unknown.json()


def test_a_bad_window_is_refused_naming_the_field(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family, "android")
    cases = [
        ({"from": TO.isoformat(), "to": FROM.isoformat()}, "to", "must not be before from"),
        (
            {"from": FROM.isoformat(), "to": (FROM + timedelta(days=63)).isoformat()},
            "to",
            "at most 62 days",
        ),
        ({"from": "2031-03-01T09:00:00"}, "from", "timezone"),
        ({"to": "tomorrow"}, "to", "datetime"),
        ({"from": "9999-12-30T00:00:00Z"}, "from", "too far in the future"),
    ]
    for params, field, reason in cases:
        response = _get(api, device, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["field"] == field, response.text
        assert reason in response.json()["error"], response.text
