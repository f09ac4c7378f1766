"""The README's state table (section "A call's life") against the SQL, cell by cell.

`TABLE` below is the state machine written out as data, one row per state x event. One test
checks that the README shows exactly this table; the others drive each cell through the real
routes (device events and the signed webhook over HTTP) or the real phase 2, and compare.
To add an event column: add its driver to `DRIVERS` and its rows to `TABLE`, and the column
to the README.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.api.app import WEBHOOK_PATH
from python_worker.api.db import refusal
from python_worker.emulators.elevenlabs import post_signed_webhook, transcription_payload
from tests.support.api import (
    Family,
    Paired,
    Row,
    ServedApi,
    as_user,
    fetch,
    new_family,
    new_session,
    pair,
)
from tests.support.world import call_binding

README = Path(__file__).resolve().parents[2] / "README.md"
SqlConn = psycopg.Connection[Row]

# (state, event, state after, HTTP status; None where the event is not an HTTP request)
TABLE: list[tuple[str, str, str, int | None]] = [
    ("queued", "delivered", "ringing", 200),
    ("queued", "accepted", "accepted", 200),
    ("queued", "declined", "declined", 200),
    ("queued", "timeout", "missed", 200),
    ("queued", "connected", "queued", 409),
    ("queued", "ended", "queued", 409),
    ("queued", "ended + id", "queued", 409),
    ("queued", "webhook", "completed", 200),
    ("queued", "phase 2", "expired", None),
    ("queued", "cancel", "cancelled", 200),
    ("ringing", "delivered", "ringing", 200),
    ("ringing", "accepted", "accepted", 200),
    ("ringing", "declined", "declined", 200),
    ("ringing", "timeout", "missed", 200),
    ("ringing", "connected", "ringing", 409),
    ("ringing", "ended", "ringing", 409),
    ("ringing", "ended + id", "ringing", 409),
    ("ringing", "webhook", "completed", 200),
    ("ringing", "phase 2", "missed", None),
    ("ringing", "cancel", "cancelled", 200),
    ("accepted", "delivered", "accepted", 200),
    ("accepted", "accepted", "accepted", 200),
    ("accepted", "declined", "accepted", 409),
    ("accepted", "timeout", "accepted", 409),
    ("accepted", "connected", "in_progress", 200),
    ("accepted", "ended", "failed", 200),
    ("accepted", "ended + id", "completed", 200),
    ("accepted", "webhook", "completed", 200),
    ("accepted", "phase 2", "failed", None),
    ("accepted", "cancel", "accepted", 400),
    ("in_progress", "delivered", "in_progress", 200),
    ("in_progress", "accepted", "in_progress", 409),
    ("in_progress", "declined", "in_progress", 409),
    ("in_progress", "timeout", "in_progress", 409),
    ("in_progress", "connected", "in_progress", 200),
    ("in_progress", "ended", "completed", 200),
    ("in_progress", "ended + id", "completed", 200),
    ("in_progress", "webhook", "completed", 200),
    ("in_progress", "phase 2", "completed", None),
    ("in_progress", "cancel", "in_progress", 400),
    ("completed", "delivered", "completed", 200),
    ("completed", "accepted", "completed", 409),
    ("completed", "declined", "completed", 409),
    ("completed", "timeout", "completed", 409),
    ("completed", "connected", "completed", 200),
    ("completed", "ended", "completed", 200),
    ("completed", "ended + id", "completed", 200),
    ("completed", "webhook", "completed", 200),
    ("completed", "phase 2", "completed", None),
    ("completed", "cancel", "completed", 400),
    ("declined", "delivered", "declined", 409),
    ("declined", "accepted", "declined", 409),
    ("declined", "declined", "declined", 200),
    ("declined", "timeout", "declined", 409),
    ("declined", "connected", "declined", 409),
    ("declined", "ended", "declined", 409),
    ("declined", "ended + id", "declined", 409),
    ("declined", "webhook", "declined", 200),
    ("declined", "phase 2", "declined", None),
    ("declined", "cancel", "declined", 400),
    ("missed", "delivered", "missed", 409),
    ("missed", "accepted", "missed", 410),
    ("missed", "declined", "missed", 409),
    ("missed", "timeout", "missed", 200),
    ("missed", "connected", "missed", 409),
    ("missed", "ended", "missed", 409),
    ("missed", "ended + id", "missed", 409),
    ("missed", "webhook", "completed", 200),
    ("missed", "phase 2", "missed", None),
    ("missed", "cancel", "missed", 400),
    ("failed (answered)", "delivered", "failed", 409),
    ("failed (answered)", "accepted", "failed", 410),
    ("failed (answered)", "declined", "failed", 409),
    ("failed (answered)", "timeout", "failed", 409),
    ("failed (answered)", "connected", "failed", 409),
    ("failed (answered)", "ended", "failed", 200),
    ("failed (answered)", "ended + id", "failed", 200),
    ("failed (answered)", "webhook", "completed", 200),
    ("failed (answered)", "phase 2", "failed", None),
    ("failed (answered)", "cancel", "failed", 400),
    ("failed (not answered)", "delivered", "failed", 409),
    ("failed (not answered)", "accepted", "failed", 410),
    ("failed (not answered)", "declined", "failed", 409),
    ("failed (not answered)", "timeout", "failed", 409),
    ("failed (not answered)", "connected", "failed", 409),
    ("failed (not answered)", "ended", "failed", 409),
    ("failed (not answered)", "ended + id", "failed", 409),
    ("failed (not answered)", "webhook", "failed", 200),
    ("failed (not answered)", "phase 2", "failed", None),
    ("failed (not answered)", "cancel", "failed", 400),
    ("cancelled", "delivered", "cancelled", 410),
    ("cancelled", "accepted", "cancelled", 410),
    ("cancelled", "declined", "cancelled", 410),
    ("cancelled", "timeout", "cancelled", 410),
    ("cancelled", "connected", "cancelled", 410),
    ("cancelled", "ended", "cancelled", 410),
    ("cancelled", "ended + id", "cancelled", 410),
    ("cancelled", "webhook", "cancelled", 200),
    ("cancelled", "phase 2", "cancelled", None),
    ("cancelled", "cancel", "cancelled", 200),
    ("expired", "delivered", "expired", 409),
    ("expired", "accepted", "expired", 410),
    ("expired", "declined", "expired", 409),
    ("expired", "timeout", "expired", 409),
    ("expired", "connected", "expired", 409),
    ("expired", "ended", "expired", 409),
    ("expired", "ended + id", "expired", 409),
    ("expired", "webhook", "expired", 200),
    ("expired", "phase 2", "expired", None),
    ("expired", "cancel", "expired", 400),
]

STATES = list(dict.fromkeys(row[0] for row in TABLE))
EVENTS = list(dict.fromkeys(row[1] for row in TABLE))
DEVICE_EVENTS = ["delivered", "accepted", "declined", "timeout", "connected", "ended", "ended + id"]


def cell(after: str, status: int | None) -> str:
    return after if status is None else f"{after} {status}"


def readme_table() -> dict[tuple[str, str], str]:
    """The README's state table: (state, event) -> cell text."""
    text = README.read_text()
    section = text.split("**The state table**", 1)[1].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    rows = []
    for line in section[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]  # rows[1] is the |---| line
    return {
        (r[0], event): value for r in body for event, value in zip(header[1:], r[1:], strict=True)
    }


def test_the_readme_shows_exactly_this_table() -> None:
    expected = {(state, event): cell(after, status) for state, event, after, status in TABLE}
    assert readme_table() == expected


def test_the_table_has_every_state_and_event_once(api_database: str) -> None:
    pairs = [(state, event) for state, event, _, _ in TABLE]
    assert len(pairs) == len(set(pairs)) == len(STATES) * len(EVENTS)
    statuses = {"queued", "ringing", "accepted", "in_progress", "completed", "declined",
                "missed", "failed", "cancelled", "expired"}  # fmt: skip
    assert {s.split(" ")[0] for s in STATES} == statuses
    assert set(EVENTS) == {*DEVICE_EVENTS, "webhook", "phase 2"} | (
        {"cancel"} if "cancel" in EVENTS else set()
    )
    with psycopg.connect(api_database) as conn:
        cancel_call = conn.execute(
            "select exists (select 1 from pg_proc where proname = 'cancel_call'"
            " and pronamespace = 'public'::regnamespace)"
        ).fetchone()
    assert cancel_call is not None
    # The family's cancel is an event of the state machine too: once it exists, its column must.
    assert cancel_call[0] is ("cancel" in EVENTS), "add the cancel column to TABLE and README"


# Driving each cell --------------------------------------------------------------------------


class Case:
    """One session of a fresh family, set up in a state, and the means to move it."""

    def __init__(self, api: ServedApi, conn: SqlConn, family: Family, device: Paired) -> None:
        self.api, self.conn, self.family, self.device = api, conn, family, device
        self.conversation = f"conv_{uuid.uuid4().hex}"
        self.session = uuid.uuid4()

    def make(self, state: str) -> None:
        status = state.split(" ")[0]
        now = fetch(self.conn, "select now() as now")["now"]
        cols: dict[str, Any] = {"id": self.session}
        if status in ("in_progress", "completed"):
            cols["conversation_id"] = self.conversation
        if state == "failed (answered)":
            cols |= {"ringing_at": now, "answered_at": now, "ended_at": now}
        if status in ("completed", "declined", "missed", "cancelled", "expired") or (
            state == "failed (not answered)"
        ):
            cols["ended_at"] = now
        if status in ("missed", "declined"):
            cols["ringing_at"] = now
        new_session(self.conn, self.family, self.device.id, status, **cols)
        if status == "queued":
            self.conn.execute(
                """insert into notification_queue (call_session_id, household_id, device_id,
                       occurrence_at, send_at, deadline_at, platform, provider, push_token)
                   select id, household_id, device_id, occurrence_at, now(),
                          now() + interval '2 minutes', 'android', 'fcm', 'token'
                   from call_sessions where id = %s""",
                [self.session],
            )

    def status(self) -> str:
        row = fetch(self.conn, "select status from call_sessions where id = %s", [self.session])
        status: str = row["status"]
        return status


def device_event(case: Case, event: str) -> tuple[str, int | None]:
    # `connected` carries the conversation id; `ended + id` is `ended` carrying it too (what an
    # app that never sends `connected` reports); every other event comes without one.
    body: dict[str, Any] = {
        "event": event.removesuffix(" + id"),
        "at": datetime.now(UTC).isoformat(),
    }
    if event in ("connected", "ended + id"):
        body["conversation_id"] = case.conversation
    response = case.api.client.post(
        f"/v1/calls/{case.session}/events", json=body, headers=case.device.headers
    )
    return case.status(), response.status_code


def webhook(case: Case, secret: str) -> tuple[str, int | None]:
    payload = transcription_payload(
        case.conversation,
        call_session_id=str(case.session),
        call_binding=call_binding(case.conn, case.session),
        start_time_unix_secs=int(time.time()) - 5,
        duration_secs=4,
    )
    response = post_signed_webhook(
        case.api.url + WEBHOOK_PATH, secret, payload, client=case.api.client
    )
    return case.status(), response.status_code


def phase_two(case: Case) -> tuple[str, int | None]:
    # In a transaction rolled back afterwards: a day later, past every bound, for this
    # session only as far as the rest of the shared API database is concerned.
    with case.conn.transaction(force_rollback=True):
        case.conn.execute("select release_due_calls(now() + interval '1 day')")
        return case.status(), None


def cancel(case: Case) -> tuple[str, int | None]:
    """The family's cancel_call RPC, as PostgREST would answer it."""
    try:
        as_user(case.conn, case.family.member, "select public.cancel_call(%s)", [case.session])
    except psycopg.Error as error:
        mapped = refusal(error)
        return case.status(), (mapped.status if mapped else 400)
    return case.status(), 200


Driver = Callable[[Case], tuple[str, int | None]]


def device_driver(event: str) -> Driver:
    return lambda case: device_event(case, event)


def drivers(secret: str) -> dict[str, Driver]:
    """How each column's event is applied: the device's and ElevenLabs' requests over HTTP,
    phase 2 in SQL, and the family's cancel as the RPC the dashboard calls."""
    table = {event: device_driver(event) for event in DEVICE_EVENTS}
    table["webhook"] = lambda case: webhook(case, secret)
    table["phase 2"] = phase_two
    table["cancel"] = cancel
    return table


@pytest.fixture(scope="module")
def household(api: ServedApi, api_database: str) -> tuple[Family, Paired]:
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        family = new_family(conn)
        return family, pair(api, conn, family, "android")


@pytest.mark.parametrize(("state", "event", "after", "status"), TABLE)
def test_the_sql_does_what_the_table_says(
    api: ServedApi,
    sql_conn: SqlConn,
    household: tuple[Family, Paired],
    webhook_secret: str,
    state: str,
    event: str,
    after: str,
    status: int | None,
) -> None:
    family, device = household
    case = Case(api, sql_conn, family, device)
    case.make(state)
    assert drivers(webhook_secret)[event](case) == (after, status)


def test_phase_two_is_run_past_every_bound(sql_conn: SqlConn) -> None:
    """The "phase 2" column's day covers every bound of the settings."""
    cfg = fetch(sql_conn, "select * from private.scheduler_settings")
    longest = max(
        cfg["grace"], cfg["connect_timeout"], cfg["max_conversation"] + cfg["webhook_grace"],
        timedelta(seconds=120),  # the longest ring timeout a schedule may have
    )  # fmt: skip
    assert longest < timedelta(days=1)
