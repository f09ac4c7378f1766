"""Call events from the app: every (state, event) pair of the session state machine, the
conversation token minted on `accepted` (against the ElevenLabs emulator), and the attacks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.emulators.elevenlabs import ElevenLabsEmulator
from tests.support.api import (
    AGENT_ID,
    Family,
    Paired,
    Row,
    ServedApi,
    fetch,
    new_family,
    new_session,
    pair,
    settings_for,
)
from tests.support.db import free_port
from tests.support.world import call_binding

SqlConn = psycopg.Connection[Row]
STATES = ["queued", "ringing", "accepted", "in_progress", "completed", "declined", "missed",
          "failed", "cancelled", "expired"]  # fmt: skip
EVENTS = ["delivered", "accepted", "declined", "timeout", "connected", "ended"]

# The state machine as agreed, written out independently of the SQL: event -> from -> to.
MOVES = {
    "delivered": {"queued": "ringing"},
    "accepted": {"queued": "accepted", "ringing": "accepted"},
    "declined": {"queued": "declined", "ringing": "declined"},
    "timeout": {"queued": "missed", "ringing": "missed"},
    "connected": {"accepted": "in_progress"},
    # `ended` is sent here with the conversation id: on an accepted call that counts as
    # `connected` then `ended` (an app that never sends `connected`). Without an id, `ended`
    # fails an accepted call (tests/integration/test_old_app_tolerance.py, the README state table).
    "ended": {"in_progress": "completed", "accepted": "completed"},
}
REPEATS = {
    "delivered": {"ringing", "accepted", "in_progress", "completed"},
    "accepted": {"accepted"},
    "declined": {"declined"},
    "timeout": {"missed"},
    "connected": {"in_progress", "completed"},
    "ended": {"completed"},
}
# The call is over (410, the app ends it): accepting a call that ended, and anything the phone
# says about a call the family cancelled.
GONE = {("accepted", s) for s in ("expired", "missed", "failed")} | {
    (e, "cancelled") for e in EVENTS
}
CONVERSATION = "conv_"


def expected(state: str, event: str) -> tuple[int, str]:
    if state in MOVES[event]:
        return 200, MOVES[event][state]
    if state in REPEATS[event]:
        return 200, state
    if (event, state) in GONE:
        return 410, state
    return 409, state


@pytest.fixture(scope="module")
def household(api: ServedApi, api_database: str) -> tuple[Family, Paired]:
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        family = new_family(conn)
        return family, pair(api, conn, family, "android")


def post_event(api: ServedApi, device: Paired, session: uuid.UUID, event: str, **extra: Any) -> Any:
    body = {"event": event, "at": datetime.now(UTC).isoformat(), **extra}
    return api.client.post(f"/v1/calls/{session}/events", json=body, headers=device.headers)


def session_row(conn: SqlConn, session: uuid.UUID) -> Row:
    return fetch(conn, "select * from call_sessions where id = %s", [session])


@pytest.mark.parametrize(("state", "event"), [(s, e) for s in STATES for e in EVENTS])
def test_call_event_transition(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired], state: str, event: str
) -> None:
    family, device = household
    conversation = f"{CONVERSATION}{uuid.uuid4().hex}"
    extra: dict[str, Any] = {}
    if state in ("in_progress", "completed"):
        extra["conversation_id"] = conversation
    session = new_session(sql_conn, family, device.id, state, **extra)
    before = session_row(sql_conn, session)
    response = post_event(api, device, session, event, conversation_id=conversation)
    status, after_state = expected(state, event)
    assert response.status_code == status, response.text
    after = session_row(sql_conn, session)
    assert after["status"] == after_state
    if status == 200:
        body = response.json()
        assert body["status"] == after_state
        assert body["changed"] is (after_state != state)
        if not body["changed"]:
            assert after["updated_at"] == before["updated_at"]  # a repeat writes nothing
        assert (body["conversation"] is not None) is (event == "accepted")
    else:
        assert after == before
        assert f"call session is {state}" in response.json()["error"]


def test_timestamps_follow_the_events(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired]
) -> None:
    family, device = household
    session = new_session(sql_conn, family, device.id, "queued")
    at = datetime.now(UTC) - timedelta(seconds=2)
    for event in ("delivered", "accepted"):
        assert post_event(api, device, session, event).status_code == 200
    conversation = f"conv_{uuid.uuid4().hex}"
    assert (
        post_event(api, device, session, "connected", conversation_id=conversation).status_code
        == 200
    )
    assert post_event(api, device, session, "ended", at=at.isoformat()).status_code == 200
    row = session_row(sql_conn, session)
    assert row["status"] == "completed"
    assert row["conversation_id"] == conversation
    assert row["ringing_at"] <= row["answered_at"]
    # A device clock before the session existed is held to the session's creation.
    assert row["ended_at"] == max(at, row["created_at"])
    # ended again is a repeat.
    again = post_event(api, device, session, "ended")
    assert again.status_code == 200
    assert again.json()["changed"] is False


def test_ended_before_connecting_fails_the_session_and_repeats_are_harmless(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired]
) -> None:
    family, device = household
    session = new_session(sql_conn, family, device.id, "accepted")
    assert post_event(api, device, session, "ended").json()["status"] == "failed"
    assert (
        session_row(sql_conn, session)["failure_reason"]
        == "the call ended before the conversation connected"
    )
    repeat = post_event(api, device, session, "ended")
    assert repeat.status_code == 200
    assert repeat.json()["changed"] is False


def test_connected_needs_a_conversation_id_of_its_own(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired]
) -> None:
    family, device = household
    session = new_session(sql_conn, family, device.id, "accepted")
    missing = api.client.post(f"/v1/calls/{session}/events", json={"event": "connected", "at": datetime.now(UTC).isoformat()},
                              headers=device.headers)  # fmt: skip
    assert missing.status_code == 422
    assert missing.json()["field"] == "conversation_id"
    taken = f"conv_{uuid.uuid4().hex}"
    new_session(sql_conn, family, device.id, "completed", conversation_id=taken)
    clash = post_event(api, device, session, "connected", conversation_id=taken)
    assert clash.status_code == 409
    assert "already belongs to another call" in clash.json()["error"]
    assert session_row(sql_conn, session)["status"] == "accepted"
    first = f"conv_{uuid.uuid4().hex}"
    assert post_event(api, device, session, "connected", conversation_id=first).status_code == 200
    other = post_event(
        api, device, session, "connected", conversation_id=f"conv_{uuid.uuid4().hex}"
    )
    assert other.status_code == 409
    assert session_row(sql_conn, session)["conversation_id"] == first


def test_bad_event_input_names_the_field(api: ServedApi, household: tuple[Family, Paired]) -> None:
    _, device = household
    cases = [
        ({"event": "exploded", "at": datetime.now(UTC).isoformat()}, "event"),
        ({"event": "delivered", "at": "2026-11-24T10:00:00"}, "at"),  # no UTC offset
        ({"event": "delivered"}, "at"),
        (
            {"event": "connected", "at": datetime.now(UTC).isoformat(), "conversation_id": "a b"},
            "conversation_id",
        ),
    ]
    for body, field in cases:
        response = api.client.post(
            f"/v1/calls/{uuid.uuid4()}/events", json=body, headers=device.headers
        )
        assert response.status_code == 422, body
        assert response.json()["field"] == field
    not_uuid = api.client.post("/v1/calls/42/events", json={"event": "delivered", "at": datetime.now(UTC).isoformat()},
                               headers=device.headers)  # fmt: skip
    assert not_uuid.status_code == 422
    assert not_uuid.json()["field"] == "session_id"


def test_another_devices_session_is_not_found_like_a_missing_one(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired]
) -> None:
    family, device = household
    intruder = pair(api, sql_conn, new_family(sql_conn, "Stranger"))
    theirs = new_session(sql_conn, family, device.id, "ringing")
    missing = uuid.uuid4()
    for event in EVENTS:
        a = post_event(api, intruder, theirs, event, conversation_id="conv_x")
        b = post_event(api, intruder, missing, event, conversation_id="conv_x")
        assert a.status_code == b.status_code == 404
        assert a.json()["error"].replace(str(theirs), "ID") == b.json()["error"].replace(
            str(missing), "ID"
        )
    assert session_row(sql_conn, theirs)["status"] == "ringing"
    # The same family's earlier device, once revoked, cannot touch the session either.
    sql_conn.execute(
        "update device_pairs set status = 'revoked', revoked_at = now() where id = %s",
        [intruder.id],
    )
    assert post_event(api, intruder, theirs, "declined").status_code == 401


def test_accepting_mints_a_fresh_token_with_the_conversation_variables(
    api: ServedApi,
    sql_conn: SqlConn,
    household: tuple[Family, Paired],
    elevenlabs: ElevenLabsEmulator,
) -> None:
    family, device = household
    earlier = new_session(
        sql_conn, family, device.id, "completed", conversation_id=f"conv_{uuid.uuid4().hex}"
    )
    sql_conn.execute(
        "insert into call_logs (call_session_id, household_id, relative_id, outcome, summary,"
        " verified_at) values (%s, %s, %s, 'completed', 'She talked about her roses.', now())",
        [earlier, family.household, family.relative],
    )
    session = new_session(sql_conn, family, device.id, "ringing")
    seen = len(elevenlabs.requests)
    response = post_event(api, device, session, "accepted")
    assert response.status_code == 200, response.text
    conversation = response.json()["conversation"]
    assert conversation["token"] == elevenlabs.tokens[-1]
    assert conversation["agent_id"] == AGENT_ID
    household_name = fetch(
        sql_conn, "select name from households where id = %s", [family.household]
    )["name"]
    assert conversation["dynamic_variables"] == {
        "relative_name": family.name,
        "household_name": household_name,
        "call_session_id": str(session),
        "call_binding": call_binding(sql_conn, session),
        "last_call_summary": "She talked about her roses.",
    }
    request = elevenlabs.requests[seen]
    assert request.path == "/v1/convai/conversation/token"
    assert request.query == {"agent_id": [AGENT_ID]}
    assert request.headers["xi-api-key"] == elevenlabs.api_key
    assert session_row(sql_conn, session)["status"] == "accepted"
    # A repeated accept (the app retrying) gets another fresh token and changes nothing.
    again = post_event(api, device, session, "accepted")
    assert again.json()["changed"] is False
    assert again.json()["conversation"]["token"] == elevenlabs.tokens[-1] != conversation["token"]


@pytest.mark.parametrize("state", ["expired", "cancelled"])
def test_accepting_a_call_that_is_over_gets_410_and_mints_nothing(
    api: ServedApi,
    sql_conn: SqlConn,
    household: tuple[Family, Paired],
    elevenlabs: ElevenLabsEmulator,
    state: str,
) -> None:
    family, device = household
    session = new_session(sql_conn, family, device.id, state)
    seen = len(elevenlabs.requests)
    response = post_event(api, device, session, "accepted")
    assert response.status_code == 410
    assert response.json()["error"] == f"call session is {state}: the call is over"
    assert len(elevenlabs.requests) == seen


@pytest.mark.parametrize(
    ("key", "reachable", "message"),
    [
        (
            "xi_wrong",
            True,
            "conversation: ElevenLabs refused the API key (HTTP 401); check ELEVENLABS_API_KEY",
        ),
        (
            "xi_any",
            False,
            "conversation: ElevenLabs could not be reached for a conversation token (ConnectError)",
        ),
    ],
)
def test_no_token_means_503_and_the_session_is_left_as_it_was(
    api_database: str,
    sql_conn: SqlConn,
    elevenlabs: ElevenLabsEmulator,
    key: str,
    reachable: bool,
    message: str,
) -> None:
    base = elevenlabs.base_url if reachable else f"http://127.0.0.1:{free_port()}"
    served = ServedApi(settings_for(api_database, elevenlabs_api_key=key, elevenlabs_base_url=base))
    try:
        family = new_family(sql_conn)
        device = pair(served, sql_conn, family)
        session = new_session(sql_conn, family, device.id, "ringing")
        before = session_row(sql_conn, session)
        response = post_event(served, device, session, "accepted")
        assert response.status_code == 503
        assert response.json() == {"error": message, "field": "conversation"}
        assert session_row(sql_conn, session) == before
    finally:
        served.stop()


def test_a_timeout_from_the_device_retries_like_phase_two(
    api: ServedApi, sql_conn: SqlConn, household: tuple[Family, Paired]
) -> None:
    family, device = household
    schedule = fetch(sql_conn, "insert into schedules (relative_id, local_time, days_of_week) values (%s, '09:30', '{1}')"
                     " returning id", [family.relative])["id"]  # fmt: skip
    session = new_session(sql_conn, family, device.id, "ringing", schedule_id=schedule, max_attempts=3,
                          origin="schedule", occurrence_at=datetime.now(UTC))  # fmt: skip
    assert post_event(api, device, session, "timeout").json()["status"] == "missed"
    retry = fetch(
        sql_conn, "select * from call_sessions where schedule_id = %s and attempt = 2", [schedule]
    )
    assert retry["origin"] == "retry"
    assert retry["status"] == "queued"
    assert (
        fetch(
            sql_conn,
            "select count(*) as n from notification_queue where call_session_id = %s",
            [retry["id"]],
        )["n"]
        == 1
    )
    # The last attempt timing out alerts the family instead.
    last = new_session(sql_conn, family, device.id, "ringing")
    assert post_event(api, device, last, "timeout").status_code == 200
    alert = fetch(sql_conn, "select * from alerts where call_session_id = %s", [last])
    assert alert["kind"] == "missed_calls"
