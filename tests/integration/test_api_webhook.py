"""The ElevenLabs post-call webhook, with real signatures: what is kept, what is refused, and
what reaches the family's dashboard."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import psycopg
import pytest

from python_worker.api.app import WEBHOOK_PATH
from python_worker.emulators.elevenlabs import (
    audio_payload,
    post_signed_webhook,
    sign,
    transcription_payload,
)
from tests.support.api import Family, Paired, Row, ServedApi, fetch, new_family, new_session, pair
from tests.support.world import call_binding

SqlConn = psycopg.Connection[Row]


def rejections(conn: SqlConn, reason: str) -> int:
    row = conn.execute(
        "select count from private.webhook_rejections where reason = %s", [reason]
    ).fetchone()
    return int(row["count"]) if row else 0


def stored_events(conn: SqlConn, conversation: str) -> list[Row]:
    return conn.execute(
        "select * from webhook_events where conversation_id = %s", [conversation]
    ).fetchall()


def logs(conn: SqlConn, session: uuid.UUID) -> list[Row]:
    return conn.execute("select * from call_logs where call_session_id = %s", [session]).fetchall()


@pytest.fixture
def call(api: ServedApi, sql_conn: SqlConn) -> tuple[Family, Paired, uuid.UUID, str]:
    """A call in progress: its family, device, session and ElevenLabs conversation id."""
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family, "android")
    conversation = f"conv_{uuid.uuid4().hex}"
    session = new_session(sql_conn, family, device.id, "in_progress", conversation_id=conversation)
    return family, device, session, conversation


def deliver(api: ServedApi, secret: str, payload: dict[str, Any] | bytes, **kwargs: Any) -> Any:
    return post_signed_webhook(api.url + WEBHOOK_PATH, secret, payload, client=api.client, **kwargs)


def test_a_transcript_becomes_the_call_log_and_completes_the_session(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    family, _device, session, conversation = call
    payload = transcription_payload(
        conversation, call_session_id=str(session), duration_secs=312, start_time_unix_secs=1_795_000_000,
        data_collection={"mood": "cheerful", "slept_well": True, "pain_level": 2},
        evaluation={"greeted_by_name": "success", "kept_it_short": "failure"},
    )  # fmt: skip
    response = deliver(api, webhook_secret, payload)
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["status"] == "processed"
    assert ack["duplicate"] is False
    assert ack["call_session_id"] == str(session)
    [log] = logs(sql_conn, session)
    data = payload["data"]
    assert log["household_id"] == family.household
    assert log["relative_id"] == family.relative
    assert log["conversation_id"] == conversation
    assert log["outcome"] == "completed"
    assert log["transcript"] == data["transcript"]
    assert log["summary"] == data["analysis"]["transcript_summary"]
    assert log["title"] == data["analysis"]["call_summary_title"]
    assert log["call_successful"] == "success"
    assert log["duration_secs"] == 312
    assert log["started_at"].timestamp() == 1_795_000_000
    assert log["data_collection"] == {"mood": "cheerful", "slept_well": True, "pain_level": 2}
    assert log["mood"] == "cheerful"
    assert log["evaluation"] == {"greeted_by_name": "success", "kept_it_short": "failure"}
    assert log["cost"] == 1412
    assert log["termination_reason"] == "end_call tool was called."
    assert log["concerns"] == []
    row = fetch(sql_conn, "select * from call_sessions where id = %s", [session])
    assert row["status"] == "completed"
    assert row["ended_at"] is not None
    [event] = stored_events(sql_conn, conversation)
    assert (event["status"], event["call_session_id"], event["household_id"]) == (
        "processed",
        session,
        family.household,
    )
    assert event["payload"] == payload
    assert (
        event["dedupe_key"]
        == f"elevenlabs:post_call_transcription:{conversation}:{payload['event_timestamp']}"
    )


def test_the_session_is_found_by_the_call_session_id_variable(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family)
    session = new_session(sql_conn, family, device.id, "accepted")  # "connected" never arrived
    conversation = f"conv_{uuid.uuid4().hex}"
    response = deliver(
        api,
        webhook_secret,
        transcription_payload(
            conversation,
            call_session_id=str(session),
            call_binding=call_binding(sql_conn, session),
        ),
    )
    assert response.json()["status"] == "processed"
    row = fetch(sql_conn, "select * from call_sessions where id = %s", [session])
    assert (row["status"], row["conversation_id"]) == ("completed", conversation)
    assert len(logs(sql_conn, session)) == 1


def test_a_result_is_never_attached_to_another_households_call(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    _, _, session, conversation = call
    other_family = new_family(sql_conn, "Someone else")
    other_device = pair(api, sql_conn, other_family)
    other_session = new_session(sql_conn, other_family, other_device.id, "accepted")
    # Conversation of one call, session id of another: neither gets the transcript.
    response = deliver(
        api, webhook_secret, transcription_payload(conversation, call_session_id=str(other_session))
    )
    assert response.status_code == 200
    assert response.json()["status"] == "unmatched"
    assert logs(sql_conn, session) == []
    assert logs(sql_conn, other_session) == []
    # A session that already has another conversation is not taken over either.
    stranger = f"conv_{uuid.uuid4().hex}"
    response = deliver(
        api,
        webhook_secret,
        transcription_payload(
            stranger, call_session_id=str(session), call_binding=call_binding(sql_conn, session)
        ),
    )
    assert response.json()["status"] == "unmatched"
    [event] = stored_events(sql_conn, stranger)
    assert "belongs to another conversation" in event["error"]
    assert event["household_id"] is None
    assert (
        fetch(sql_conn, "select status from call_sessions where id = %s", [session])["status"]
        == "in_progress"
    )


def test_an_event_matching_no_session_is_kept_and_answered_200(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    conversation = f"conv_{uuid.uuid4().hex}"
    response = deliver(api, webhook_secret, transcription_payload(conversation))
    assert response.status_code == 200
    assert response.json()["status"] == "unmatched"
    [event] = stored_events(sql_conn, conversation)
    assert event["status"] == "unmatched"
    assert event["payload"]["data"]["conversation_id"] == conversation


def test_a_duplicate_delivery_changes_nothing(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    _, _, session, conversation = call
    payload = transcription_payload(
        conversation, data_collection={"wellbeing_concern": "she fell on Sunday"}
    )
    first = deliver(api, webhook_secret, payload)
    second = deliver(api, webhook_secret, payload, timestamp=int(time.time()) + 5)
    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True
    assert second.json()["event_id"] == first.json()["event_id"]
    assert len(stored_events(sql_conn, conversation)) == 1
    assert len(logs(sql_conn, session)) == 1
    alerts = sql_conn.execute(
        "select * from alerts where call_session_id = %s", [session]
    ).fetchall()
    assert len(alerts) == 1


def test_concerning_content_raises_an_alert(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    family, _, session, conversation = call
    payload = transcription_payload(
        conversation,
        data_collection={
            "mood": "low",
            "wellbeing_concern": "said she fell on Sunday",
            "safety_concern": "no",
        },
        evaluation={"safety_concern": "success"},
    )
    assert deliver(api, webhook_secret, payload).json()["status"] == "processed"
    [log] = logs(sql_conn, session)
    assert log["concerns"] == ["wellbeing_concern"]
    alert = fetch(sql_conn, "select * from alerts where call_session_id = %s", [session])
    assert alert["kind"] == "concerning_content"
    assert alert["household_id"] == family.household
    assert alert["severity"] == "critical"
    assert "wellbeing_concern" in alert["message"]


def test_a_failed_evaluation_of_a_concern_field_raises_an_alert(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    _, _, session, conversation = call
    payload = transcription_payload(
        conversation, data_collection={}, evaluation={"safety_concern": "failure"}
    )
    deliver(api, webhook_secret, payload)
    assert logs(sql_conn, session)[0]["concerns"] == ["safety_concern"]
    assert (
        fetch(sql_conn, "select kind from alerts where call_session_id = %s", [session])["kind"]
        == "concerning_content"
    )


def test_an_ingest_failure_keeps_the_event_and_writes_nothing_else(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    _, _, session, conversation = call
    before = fetch(sql_conn, "select * from call_sessions where id = %s", [session])
    payload = transcription_payload(
        conversation, duration_secs=10**6, data_collection={"wellbeing_concern": "yes"}
    )
    response = deliver(api, webhook_secret, payload)
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    [event] = stored_events(sql_conn, conversation)
    assert "call_logs.duration_secs" in event["error"]
    assert event["payload"] == payload
    assert logs(sql_conn, session) == []
    assert (
        sql_conn.execute("select * from alerts where call_session_id = %s", [session]).fetchall()
        == []
    )
    assert fetch(sql_conn, "select * from call_sessions where id = %s", [session]) == before


def test_post_call_audio_is_acknowledged_without_storing_the_audio(
    api: ServedApi,
    sql_conn: SqlConn,
    webhook_secret: str,
    call: tuple[Family, Paired, uuid.UUID, str],
) -> None:
    _, _, session, conversation = call
    audio = b"ID3" + bytes(range(256)) * 200
    body = json.dumps(audio_payload(conversation, audio)).encode()
    response = deliver(api, webhook_secret, body)
    assert response.status_code == 200
    assert response.json()["status"] == "processed"
    [event] = stored_events(sql_conn, conversation)
    assert event["event_type"] == "post_call_audio"
    assert event["call_session_id"] == session
    assert event["payload_bytes"] == len(body)
    assert "full_audio" not in event["payload"]["data"]
    assert base64.b64encode(audio).decode()[:100] not in json.dumps(event["payload"])


def test_an_unknown_event_type_is_kept_as_ignored(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    conversation = f"conv_{uuid.uuid4().hex}"
    payload = {"type": "call_initiation_failure", "event_timestamp": int(time.time()),
               "data": {"conversation_id": conversation, "failure_reason": "busy"}}  # fmt: skip
    assert deliver(api, webhook_secret, payload).json()["status"] == "ignored"
    assert stored_events(sql_conn, conversation)[0]["status"] == "ignored"


def test_several_signatures_are_allowed_while_a_secret_is_rotated(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    conversation = f"conv_{uuid.uuid4().hex}"
    body = json.dumps(transcription_payload(conversation)).encode()
    now = int(time.time())
    old = sign("wsec_old_secret", body, now).split(",")[1]
    header = f"t={now},{old},{sign(webhook_secret, body, now).split(',')[1]}"
    response = api.client.post(WEBHOOK_PATH, content=body, headers={"ElevenLabs-Signature": header})
    assert response.status_code == 200, response.text


def test_a_header_part_without_equals_before_the_real_ones_is_skipped(
    api: ServedApi, webhook_secret: str
) -> None:
    body = json.dumps(transcription_payload(f"conv_{uuid.uuid4().hex}")).encode()
    header = "garbage, " + sign(webhook_secret, body, int(time.time()))
    response = api.client.post(WEBHOOK_PATH, content=body, headers={"ElevenLabs-Signature": header})
    assert response.status_code == 200, response.text


def signed_refusal_cases(secret: str, body: bytes) -> list[tuple[str, bytes, dict[str, str], str]]:
    now = int(time.time())
    tampered = body.replace(b"garden", b"gardem")
    return [
        ("tampered body", tampered, {"ElevenLabs-Signature": sign(secret, body, now)}, "bad_signature"),
        ("wrong secret", body, {"ElevenLabs-Signature": sign(secret + "x", body, now)}, "bad_signature"),
        ("stale timestamp", body, {"ElevenLabs-Signature": sign(secret, body, now - 31 * 60)}, "stale_signature"),
        ("future timestamp", body, {"ElevenLabs-Signature": sign(secret, body, now + 10 * 60)}, "future_signature"),
        ("missing header", body, {}, "missing_signature"),
        ("garbled header", body, {"ElevenLabs-Signature": "sha256=abc"}, "bad_signature"),
        ("timestamp swapped", body, {"ElevenLabs-Signature": sign(secret, body, now).replace(f"t={now}", f"t={now - 1}")}, "bad_signature"),
        ("non-numeric t", body, {"ElevenLabs-Signature": sign(secret, body, now).replace(f"t={now}", "t=17x")}, "bad_signature"),
        ("v0 without t", body, {"ElevenLabs-Signature": sign(secret, body, now).split(",")[1]}, "bad_signature"),
        ("13-digit t", body, {"ElevenLabs-Signature": sign(secret, body, now).replace(f"t={now}", f"t={now:013d}")}, "bad_signature"),
    ]  # fmt: skip


def test_bad_signatures_are_refused_with_401_and_only_counted(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    conversation = f"conv_{uuid.uuid4().hex}"
    body = json.dumps(transcription_payload(conversation)).encode()
    for name, content, headers, reason in signed_refusal_cases(webhook_secret, body):
        counted = rejections(sql_conn, reason)
        response = api.client.post(WEBHOOK_PATH, content=content, headers=headers)
        assert response.status_code == 401, name
        assert response.json()["field"] == "ElevenLabs-Signature", name
        assert rejections(sql_conn, reason) == counted + 1, name
    assert stored_events(sql_conn, conversation) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (
            b'{"type": "post_call_transcription", "event_timestamp": "yesterday", "data": {}}',
            "event_timestamp",
        ),
        (b'{"type": "post_call_transcription", "event_timestamp": 1795000000}', "data"),
        (b'{"event_timestamp": 1795000000, "data": {}}', "type"),
        (
            b'{"type": "x", "event_timestamp": 1795000000, "data": {"conversation_id": 7}}',
            "data.conversation_id",
        ),
        (b'{"type": "x", "event_timestamp": 1795000000, "data": {"note": "\\u0000"}}', "data.note"),
        (b'{"type": "x", "event_timestamp": NaN, "data": {}}', "body"),
        (b"\xff\xfe{}", "body"),
    ],
)
def test_a_signed_body_that_is_not_an_event_gets_400_and_is_only_counted(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str, body: bytes, field: str
) -> None:
    counted = rejections(sql_conn, "malformed")
    total = fetch(sql_conn, "select count(*) as n from webhook_events")["n"]
    response = deliver(api, webhook_secret, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ")
    assert rejections(sql_conn, "malformed") == counted + 1
    assert fetch(sql_conn, "select count(*) as n from webhook_events")["n"] == total


def test_an_oversize_body_gets_413_before_anything_else(
    api: ServedApi, sql_conn: SqlConn, webhook_secret: str
) -> None:
    counted = rejections(sql_conn, "too_large")
    conversation = f"conv_{uuid.uuid4().hex}"
    body = json.dumps(
        audio_payload(conversation, b"\x00" * (api.settings.webhook_max_bytes))
    ).encode()
    response = deliver(api, webhook_secret, body)
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert rejections(sql_conn, "too_large") == counted + 1
    assert stored_events(sql_conn, conversation) == []
    # Without a Content-Length (chunked), the limit holds all the same.
    chunks = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    streamed = api.client.post(
        WEBHOOK_PATH,
        content=chunks,
        headers={"ElevenLabs-Signature": sign(webhook_secret, body, int(time.time()))},
    )
    assert streamed.status_code == 413
