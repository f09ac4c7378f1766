"""A ringing call the family cancels: the real worker tells the phone to stop (issue 11,
item 7). Android gets an FCM data message of type `cancel`; iOS a background push to the
app's regular APNs token, never a second VoIP push."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from python_worker.emulators.suite import ThreadedSuite
from tests.support.worker import (
    Conn,
    Relative,
    Workers,
    add_relative,
    queue_call,
    session_for,
    status_is,
    wait_for,
)
from tests.support.world import apns_token


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


def _lock_waiter(conn: Conn, pid: int) -> bool:
    row = conn.execute(
        "select wait_event_type from pg_stat_activity where pid = %s", [pid]
    ).fetchone()
    return row is not None and row["wait_event_type"] == "Lock"


def _claim(worker_database: str, worker: str) -> list[uuid.UUID]:
    with psycopg.connect(worker_database, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set role service_role")
        rows = conn.execute("select queue_id from claim_due_calls(%s, 10)", [worker]).fetchall()
    return [row["queue_id"] for row in rows]


def test_a_cancel_racing_the_workers_record_waits_for_it_and_then_tells_the_phone(
    wdb: Conn, worker_database: str
) -> None:
    gran = add_relative(wdb, "ios")
    wdb.execute(
        "update device_pairs set apns_token = %s where id = %s", [apns_token(), gran.device]
    )
    qid = queue_call(wdb, gran)
    session = session_for(wdb, qid)["id"]
    user = member_of(wdb, gran)
    assert qid in _claim(worker_database, "w-race")
    with psycopg.connect(worker_database, row_factory=dict_row) as record:
        record.execute("set role service_role")
        record.execute(
            "select * from record_push_results('w-race', %s)",
            [Jsonb([{"queue_id": str(qid), "outcome": "delivered", "provider": "apns"}])],
        )  # the push was delivered; this transaction is still open
        with psycopg.connect(worker_database, autocommit=True, row_factory=dict_row) as family:
            pid = family.info.backend_pid
            with ThreadPoolExecutor(1) as pool:
                cancelled = pool.submit(cancel_as, family, user, session)
                wait_for("the cancel to wait for the record", lambda: _lock_waiter(wdb, pid))
                record.commit()
                result = cancelled.result(timeout=30)
    # The record won: the call rang, so the cancel treats it as ringing and tells the phone.
    assert (result["previous_status"], result["cancel_push"]) == ("ringing", True)
    assert status_is(wdb, qid, "sent")
    assert session_for(wdb, qid)["status"] == "cancelled"


def test_a_record_racing_a_cancel_waits_for_it_and_then_changes_nothing(
    wdb: Conn, worker_database: str
) -> None:
    gran = add_relative(wdb, "ios")
    wdb.execute(
        "update device_pairs set apns_token = %s where id = %s", [apns_token(), gran.device]
    )
    qid = queue_call(wdb, gran)
    session = session_for(wdb, qid)["id"]
    user = member_of(wdb, gran)
    assert qid in _claim(worker_database, "w-race")
    with psycopg.connect(worker_database, row_factory=dict_row) as family:
        family.execute("set local role authenticated")
        family.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [f'{{"role": "authenticated", "sub": "{user}"}}'],
        )
        family.execute("select cancel_call(%s)", [session])  # still open
        with psycopg.connect(worker_database, autocommit=True, row_factory=dict_row) as record:
            record.execute("set role service_role")
            pid = record.info.backend_pid

            def record_delivered() -> list[dict[str, Any]]:
                return record.execute(
                    "select * from record_push_results('w-race', %s)",
                    [Jsonb([{"queue_id": str(qid), "outcome": "delivered", "provider": "apns"}])],
                ).fetchall()

            with ThreadPoolExecutor(1) as pool:
                recorded = pool.submit(record_delivered)
                wait_for("the record to wait for the cancel", lambda: _lock_waiter(wdb, pid))
                family.commit()
                rows = recorded.result(timeout=30)
    assert [row["result"] for row in rows] == ["lost_lease"]
    assert status_is(wdb, qid, "cancelled")
    assert session_for(wdb, qid)["status"] == "cancelled"
    notice = wdb.execute(
        "select status from private.cancel_notices where call_session_id = %s", [session]
    ).fetchone()
    assert notice == {"status": "queued"}  # the push may be on its way: the phone is told
