"""Issue 25, item 6, from the attacker's side: refusals name the field and the reason, never
SQL, driver or parser internals. (Every error body of every API server the tests start is
also checked as it is sent: tests/api_support.ErrorBodyCheck.)"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from python_worker.api.app import WEBHOOK_PATH
from python_worker.api.db import refusal
from python_worker.emulators.elevenlabs import post_signed_webhook, transcription_payload
from tests.support.api import Paired, Row, ServedApi, new_family, new_session, pair
from tests.support.error_text import leaked

SqlConn = psycopg.Connection[Row]


@pytest.mark.parametrize(
    "body",
    [
        'duplicate key value violates unique constraint "call_sessions_conversation_idx"',
        "invalid input syntax for type json",
        "psycopg.errors.UniqueViolation: Key (conversation_id)=(c) already exists.",
        "PostgreSQL text fields cannot contain NUL (0x00) bytes",
        "is not valid JSON (RecursionError)",
    ],
)
def test_the_detector_catches_what_leaked_before(body: str) -> None:
    assert leaked(json.dumps({"error": body})) is not None


def test_a_unique_violation_is_told_as_the_field_not_the_index(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family).id
    conversation = f"conv_{uuid.uuid4().hex}"
    new_session(sql_conn, family, device, "in_progress", conversation_id=conversation)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        new_session(sql_conn, family, device, "in_progress", conversation_id=conversation)
    refused = refusal(caught.value)
    assert refused is not None
    assert (refused.status, refused.message, refused.field) == (
        409, "conversation_id: already belongs to another call", "conversation_id",
    )  # fmt: skip


def _event(api: ServedApi, device: Paired, session: uuid.UUID, event: str, **extra: Any) -> Any:
    body = {"event": event, "at": datetime.now(UTC).isoformat(), **extra}
    return api.client.post(f"/v1/calls/{session}/events", json=body, headers=device.headers)


def test_two_devices_connecting_one_conversation_at_once_get_a_field_named_409(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    answers: list[httpx.Response] = []
    for _ in range(5):  # races: some go through the SQL check, some hit the unique index
        pairs = []
        for _ in range(2):
            family = new_family(sql_conn)
            device = pair(api, sql_conn, family)
            pairs.append((device, new_session(sql_conn, family, device.id, "accepted")))
        conversation = f"conv_{uuid.uuid4().hex}"
        start = threading.Barrier(2)

        def connect(
            device: Paired, session: uuid.UUID, c: str = conversation, start: Any = start
        ) -> None:
            with httpx.Client(base_url=api.url, timeout=30) as client:
                start.wait()
                answers.append(client.post(
                    f"/v1/calls/{session}/events", headers=device.headers,
                    json={"event": "connected", "at": datetime.now(UTC).isoformat(),
                          "conversation_id": c},
                ))  # fmt: skip

        threads = [threading.Thread(target=connect, args=p) for p in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) == 5
    for answer in refused:
        assert answer.status_code == 409
        assert answer.json()["field"] == "conversation_id"
        assert answer.json()["error"].startswith("conversation_id: ") or answer.json()[
            "error"
        ].startswith("invalid conversation_id: already belongs to another call")


def test_a_signed_webhook_with_a_number_beyond_a_double_names_the_field(
    api: ServedApi, webhook_secret: str
) -> None:
    payload = transcription_payload(f"conv_{uuid.uuid4().hex}")
    body = json.dumps(payload).replace('"cost": 1412', '"cost": 1e400').encode()
    assert b"1e400" in body
    response = post_signed_webhook(api.url + WEBHOOK_PATH, webhook_secret, body, client=api.client)
    assert response.status_code == 400
    assert response.json() == {
        "error": "data.metadata.cost: is a number too large to store",
        "field": "data.metadata.cost",
    }


def test_not_found_and_over_name_the_session(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family)
    missing = _event(api, device, uuid.uuid4(), "delivered")
    assert (missing.status_code, missing.json()["field"]) == (404, "session_id")
    over = new_session(sql_conn, family, device.id, "expired", ended_at="now()")
    gone = _event(api, device, over, "accepted")
    assert (gone.status_code, gone.json()["field"]) == (410, "session_id")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[" * 5000 + "]" * 5000, "body: is nested too deeply to read"),
        ('{"pairing_id": ' + "7" * 5000 + "}", "body: has a number with more than 4300 digits"),
        ("{nope", "body: is not valid JSON (Expecting property name enclosed in double quotes"),
    ],
)
def test_bodies_that_cannot_be_read_say_why(api: ServedApi, raw: str, reason: str) -> None:
    response = api.client.post(
        "/v1/devices/pair", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert response.json()["error"].startswith(reason)
