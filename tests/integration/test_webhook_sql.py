"""The webhook's SQL layer on its own: `store_webhook_event` checks what Python checks too.

The API refuses a bad envelope and strips post_call_audio's `full_audio` before calling the
database (tests/unit/api/test_signature.py pins that layer); the SQL function keeps both rules for any
other caller. Each layer is tested on its own, so losing either one fails a test (issue 17,
item 10).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.db import Conn, one


def store(db: Conn, payload: dict[str, Any]) -> dict[str, Any]:
    return one(
        db,
        "select * from store_webhook_event(%s::jsonb, %s)",
        [json.dumps(payload), len(json.dumps(payload))],
    )


def stored_payload(db: Conn, event_id: object) -> Any:
    return one(db, "select payload from webhook_events where id = %s", [event_id])["payload"]


def test_post_call_audio_is_stored_without_full_audio_by_the_database_itself(db: Conn) -> None:
    audio = {
        "type": "post_call_audio",
        "event_timestamp": 1_795_000_000,
        "data": {"conversation_id": "conv_sql_audio", "agent_id": "a", "full_audio": "QUJD"},
    }
    event = store(db, audio)
    assert stored_payload(db, event["event_id"]) == {
        "type": "post_call_audio",
        "event_timestamp": 1_795_000_000,
        "data": {"conversation_id": "conv_sql_audio", "agent_id": "a"},
    }


def test_other_events_are_stored_as_received(db: Conn) -> None:
    transcription = {
        "type": "post_call_transcription",
        "event_timestamp": 1_795_000_000,
        "data": {"conversation_id": "conv_sql_t", "full_audio": "kept: not an audio event"},
    }
    assert stored_payload(db, store(db, transcription)["event_id"]) == transcription


@pytest.mark.parametrize("stamp", [0, 100_000_000_000])
def test_the_plausible_event_timestamps_end_where_pythons_do(db: Conn, stamp: int) -> None:
    event = store(db, {"type": "x", "event_timestamp": stamp, "data": {}})
    assert event["status"] == "received"


@pytest.mark.parametrize("stamp", [-1, 100_000_000_001, "1795000000", None])
def test_an_implausible_event_timestamp_is_refused_by_the_database(db: Conn, stamp: object) -> None:
    with (
        pytest.raises(psycopg.DatabaseError, match="invalid event_timestamp: must be a UNIX") as e,
        db.transaction(),
    ):
        store(db, {"type": "x", "event_timestamp": stamp, "data": {}})
    assert e.value.sqlstate == "CP422"
    assert one(db, "select count(*) as n from webhook_events where event_type = 'x'")["n"] == 0
