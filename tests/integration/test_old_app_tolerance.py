"""What an app that never sends `connected` gets (issue 16, item 5): `ended` with the
conversation id completes the call; repeated and late events are harmless; a refusal names
the event contract."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from python_worker.api.app import WEBHOOK_PATH
from python_worker.emulators.elevenlabs import post_signed_webhook, transcription_payload
from tests.support.api import Paired, Row, ServedApi, fetch, new_family, new_session, pair

SqlConn = psycopg.Connection[Row]
CONTRACT = "delivered, accepted, connected (with conversation_id), ended"


def _event(api: ServedApi, device: Paired, session: uuid.UUID, event: str, **extra: Any) -> Any:
    body = {"event": event, "at": datetime.now(UTC).isoformat(), **extra}
    return api.client.post(f"/v1/calls/{session}/events", json=body, headers=device.headers)


def _row(conn: SqlConn, session: uuid.UUID) -> Row:
    return fetch(conn, "select * from call_sessions where id = %s", [session])


def _answered(api: ServedApi, conn: SqlConn) -> tuple[Paired, uuid.UUID]:
    family = new_family(conn)
    device = pair(api, conn, family, "android")
    return device, new_session(conn, family, device.id, "accepted")


def test_ended_with_the_conversation_id_completes_an_answered_call(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device, session = _answered(api, sql_conn)
    conversation = f"conv_{uuid.uuid4().hex}"
    response = _event(api, device, session, "ended", conversation_id=conversation)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["changed"]) == ("completed", True)
    row = _row(sql_conn, session)
    assert (row["status"], row["conversation_id"], row["failure_reason"]) == (
        "completed",
        conversation,
        None,
    )
    assert row["ended_at"] is not None
    # Repeated and late events are harmless: the same answer, nothing changes.
    again = _event(api, device, session, "ended", conversation_id=conversation)
    assert (again.status_code, again.json()["changed"]) == (200, False)
    assert (_event(api, device, session, "ended").status_code, _row(sql_conn, session)) == (
        200,
        row,
    )
    assert _event(api, device, session, "delivered").status_code == 200
    late = _event(api, device, session, "accepted")
    assert late.status_code == 409
    assert CONTRACT in late.json()["error"]
    assert _row(sql_conn, session) == row


def test_ended_without_a_conversation_id_still_fails_the_call(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device, session = _answered(api, sql_conn)
    assert _event(api, device, session, "ended").json()["status"] == "failed"
    assert _row(sql_conn, session)["failure_reason"] == (
        "the call ended before the conversation connected"
    )


def test_a_conversation_id_of_another_call_is_refused_and_changes_nothing(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device, session = _answered(api, sql_conn)
    _, other = _answered(api, sql_conn)
    taken = f"conv_{uuid.uuid4().hex}"
    sql_conn.execute(
        "update call_sessions set status = 'in_progress', conversation_id = %s where id = %s",
        [taken, other],
    )
    before = _row(sql_conn, session)
    refused = _event(api, device, session, "ended", conversation_id=taken)
    assert refused.status_code == 409
    assert "already belongs to another call" in refused.json()["error"]
    assert _row(sql_conn, session) == before


def test_ended_with_another_conversation_than_the_connected_one_is_refused(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device, session = _answered(api, sql_conn)
    first = f"conv_{uuid.uuid4().hex}"
    assert _event(api, device, session, "connected", conversation_id=first).status_code == 200
    refused = _event(api, device, session, "ended", conversation_id="conv_other")
    assert refused.status_code == 409
    assert "with another conversation" in refused.json()["error"]
    assert CONTRACT in refused.json()["error"]
    assert _row(sql_conn, session)["status"] == "in_progress"
    done = _event(api, device, session, "ended", conversation_id=first)
    assert done.json()["status"] == "completed"


def test_a_call_phase_2_failed_learns_its_conversation_and_the_webhook_completes_it(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    device, session = _answered(api, sql_conn)
    # Phase 2 closed it: answered, no `connected` within connect_timeout.
    sql_conn.execute(
        "update call_sessions set status = 'failed', ended_at = now(),"
        " failure_reason = 'no_connected_event' where id = %s",
        [session],
    )
    conversation = f"conv_{uuid.uuid4().hex}"
    late = _event(api, device, session, "ended", conversation_id=conversation)
    assert (late.status_code, late.json()["status"], late.json()["changed"]) == (
        200,
        "failed",
        False,
    )
    assert _row(sql_conn, session)["conversation_id"] == conversation
    # The old app's own dynamic variables carry no call_session_id: the id is the match.
    payload = transcription_payload(
        conversation, start_time_unix_secs=int(time.time()) - 5, duration_secs=4
    )
    answer = post_signed_webhook(api.url + WEBHOOK_PATH, webhook_secret, payload, client=api.client)
    assert answer.status_code == 200, answer.text
    assert _row(sql_conn, session)["status"] == "completed"


def test_the_old_apps_status_and_action_body_is_refused_naming_the_contract(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device, session = _answered(api, sql_conn)
    before = _row(sql_conn, session)
    response = api.client.post(
        f"/v1/calls/{session}/events",
        json={"status": "completed", "action": "end"},
        headers=device.headers,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "event"
    assert CONTRACT in response.json()["error"]
    assert _row(sql_conn, session) == before
