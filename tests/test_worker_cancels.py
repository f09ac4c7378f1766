"""A ringing call the family cancels: the real worker tells the phone to stop (issue 11,
item 7). Android gets an FCM data message of type `cancel`; iOS a background push to the
app's regular APNs token, never a second VoIP push."""

from __future__ import annotations

import uuid
from typing import Any

from python_worker.emulators.suite import ThreadedSuite
from tests.worker_support import (
    Conn,
    Relative,
    Workers,
    add_relative,
    queue_call,
    session_for,
    status_is,
    wait_for,
)
from tests.world import apns_token


def member_of(conn: Conn, who: Relative) -> uuid.UUID:
    user = conn.execute(
        "insert into auth.users (email) values (%s) returning id",
        [f"{uuid.uuid4().hex}@example.test"],
    ).fetchone()
    assert user is not None
    conn.execute(
        "insert into household_members (household_id, user_id, role) values (%s, %s, 'member')",
        [who.household, user["id"]],
    )
    return user["id"]  # type: ignore[no-any-return]


def cancel_as(conn: Conn, user: uuid.UUID, session: uuid.UUID) -> dict[str, Any]:
    """The dashboard's RPC, as PostgREST runs it for `user`."""
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [f'{{"role": "authenticated", "sub": "{user}"}}'],
        )
        row = conn.execute("select cancel_call(%s) as result", [session]).fetchone()
    assert row is not None
    result: dict[str, Any] = row["result"]
    return result


def notice_status(conn: Conn, session: uuid.UUID) -> str | None:
    row = conn.execute(
        "select status from private.cancel_notices where call_session_id = %s", [session]
    ).fetchone()
    return row["status"] if row and row["status"] == "sent" else None


def test_a_cancelled_ringing_iphone_gets_a_background_push_to_its_regular_token(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "ios")
    regular = apns_token()
    wdb.execute("update device_pairs set apns_token = %s where id = %s", [regular, gran.device])
    qid = queue_call(wdb, gran)
    wait_for("the call to ring", lambda: status_is(wdb, qid, "sent"))
    session = session_for(wdb, qid)["id"]
    result = cancel_as(wdb, member_of(wdb, gran), session)
    assert (result["previous_status"], result["cancel_push"]) == ("ringing", True)
    wait_for("the cancel notice to be sent", lambda: notice_status(wdb, session))
    call, cancel = emulators.suite.apns.deliveries
    assert (call.push_type, call.token) == ("voip", gran.voip_token)
    assert cancel.token == regular
    assert cancel.topic == emulators.suite.bundle_id  # not <bundle>.voip
    assert (cancel.push_type, cancel.priority) == ("background", "5")
    assert cancel.payload is not None
    assert cancel.payload["type"] == "cancel"
    assert cancel.payload["id"] == str(session)
    assert cancel.payload["aps"] == {"content-available": 1}
    assert session_for(wdb, qid)["status"] == "cancelled"


def test_a_cancelled_ringing_android_phone_gets_an_fcm_cancel_message(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "android", voip=False)
    qid = queue_call(wdb, gran)
    wait_for("the call to ring", lambda: status_is(wdb, qid, "sent"))
    session = session_for(wdb, qid)["id"]
    cancel_as(wdb, member_of(wdb, gran), session)
    wait_for("the cancel notice to be sent", lambda: notice_status(wdb, session))
    call, cancel = emulators.suite.fcm.deliveries
    assert call.data["kind"] == "incoming_call"
    assert cancel.token == gran.fcm_token
    assert cancel.data["type"] == "cancel"
    assert cancel.data["id"] == cancel.data["sessionId"] == str(session)
    assert cancel.android["priority"] == "high"
    assert emulators.suite.apns.deliveries == []
