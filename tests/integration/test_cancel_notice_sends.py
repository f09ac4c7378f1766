"""What a cancel notice carries, how its sends are counted and when the duty looks again.

Issue 26: the cancel tests checked only that a cancel push arrives. Here the duty
(`worker/cancels.py`) runs in-process against the worker database and the real emulators
(HTTP/2 over TLS), and each test asserts one thing the push or the bookkeeping must get
right: the APNs id is the notice's, the expiry is the ring window's end, the FCM TTL is what
is left of it (never negative), the attempt number drives the backoff, every answer is
counted, and the sleep until the next notice follows the database's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import ThreadedSuite
from python_worker.push.payloads import apns_cancel_payload, fcm_cancel_message
from python_worker.push.retry import RetryPolicy
from python_worker.worker.cancels import CancelNotices
from python_worker.worker.db import WorkerDatabase
from python_worker.worker.dispatcher import Senders
from tests.support.push import make_apns_sender, make_fcm_sender
from tests.support.worker import Conn, Relative, add_relative
from tests.support.world import apns_token, fcm_token

POLL_S = 7.0


class LowestJitter(random.Random):
    """Backoff without its random half: the delay of attempt n is exactly base * 2**(n-1) / 2."""

    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.fixture
def duty(worker_database: str, emulators: ThreadedSuite) -> Iterator[CancelNotices]:
    """The cancel-notice duty with both senders (their retries without jitter)."""
    endpoints = emulators.suite.endpoints
    policy = RetryPolicy(rng=LowestJitter())

    async def build() -> CancelNotices:
        db = WorkerDatabase(worker_database, "service_role", f"cancels-{uuid.uuid4().hex[:8]}")
        await db.open()
        senders = Senders(
            make_fcm_sender(endpoints, policy=policy), make_apns_sender(endpoints, policy=policy)
        )
        return CancelNotices(db, senders, lease_s=30.0, poll_interval_s=POLL_S)

    loop = asyncio.new_event_loop()
    notices = loop.run_until_complete(build())
    notices.loop = loop  # type: ignore[attr-defined]
    yield notices
    loop.run_until_complete(notices.senders.aclose())
    loop.run_until_complete(notices.db.close())
    loop.close()


def run(notices: CancelNotices, coroutine: Any) -> Any:
    return notices.loop.run_until_complete(coroutine)  # type: ignore[attr-defined]


def add_notice(
    conn: Conn,
    who: Relative,
    provider: str,
    *,
    send_in_s: float = -1.0,
    deadline_in_s: float = 60.0,
    attempts: int = 0,
    token: str | None = None,
) -> dict[str, Any]:
    """A cancelled call of `who` and its notice, due `send_in_s` from the database's now."""
    session = conn.execute(
        """insert into call_sessions (household_id, relative_id, device_id, occurrence_at,
               origin, status, ended_at)
           values (%s, %s, %s, now(), 'call_now', 'cancelled', now()) returning id""",
        [who.household, who.relative, who.device],
    ).fetchone()
    assert session is not None
    notice = conn.execute(
        """insert into private.cancel_notices (call_session_id, household_id, device_id,
               platform, provider, push_token, send_at, deadline_at, attempts)
           values (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s),
                   now() + make_interval(secs => %s), %s)
           returning *""",
        [
            session["id"],
            who.household,
            who.device,
            "ios" if provider == "apns" else "android",
            provider,
            token or (apns_token() if provider == "apns" else fcm_token()),
            send_in_s,
            deadline_in_s,
            attempts,
        ],
    ).fetchone()
    assert notice is not None
    return notice


def notice_row(conn: Conn, notice: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        "select * from private.cancel_notices where id = %s", [notice["id"]]
    ).fetchone()
    assert row is not None
    return row


def test_an_apns_notice_carries_its_id_and_the_ring_windows_end(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite
) -> None:
    gran = add_relative(wdb, "ios")
    notice = add_notice(wdb, gran, "apns")
    assert run(duty, duty.send_ready()) == 1
    [push] = emulators.suite.apns.deliveries
    assert push.apns_id == str(notice["id"])
    assert push.token == notice["push_token"]
    assert push.expiration == str(int(notice["deadline_at"].timestamp()))
    assert push.payload == json.loads(apns_cancel_payload(notice["call_session_id"]))
    row = notice_row(wdb, notice)
    assert (row["status"], row["attempts"], row["provider_message_id"]) == (
        "sent",
        1,
        str(notice["id"]),
    )
    assert duty.sent == 1


def test_an_fcm_notice_lives_only_for_what_is_left_of_the_ring_window(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite
) -> None:
    gran = add_relative(wdb, "android")
    notice = add_notice(wdb, gran, "fcm", deadline_in_s=120.0)
    assert run(duty, duty.send_ready()) == 1
    [push] = emulators.suite.fcm.deliveries
    assert push.token == notice["push_token"]
    message = fcm_cancel_message(notice["call_session_id"], notice["push_token"], 1)
    assert push.data == message["data"]
    ttl = push.android["ttl"]
    assert isinstance(ttl, str)
    assert ttl.endswith("s")
    # Whole seconds left until the deadline, counted when the push went (never more).
    left = (notice["deadline_at"] - dt.datetime.now(dt.UTC)).total_seconds()
    assert int(left) <= int(ttl[:-1]) <= 120
    assert duty.sent == 1


def test_a_window_already_over_gives_the_shortest_ttl_never_a_negative_one(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite
) -> None:
    # Claimed a moment before the deadline, sent after it: FCM gets one second, not -n.
    gran = add_relative(wdb, "android")
    notice = add_notice(wdb, gran, "fcm")
    row = {
        "notice_id": notice["id"],
        "call_session_id": notice["call_session_id"],
        "household_id": gran.household,
        "provider": "fcm",
        "push_token": notice["push_token"],
        "deadline_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30),
        "attempts": 1,
    }
    result = run(duty, duty._send(row))
    assert result["outcome"] == "delivered"
    [push] = emulators.suite.fcm.deliveries
    assert push.android["ttl"] == "1s"


@pytest.mark.parametrize(("provider", "attempts"), [("apns", 0), ("apns", 2), ("fcm", 3)])
def test_the_attempt_number_drives_the_backoff_of_a_retry(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite, provider: str, attempts: int
) -> None:
    gran = add_relative(wdb, "ios" if provider == "apns" else "android")
    token = apns_token() if provider == "apns" else fcm_token()
    notice = add_notice(wdb, gran, provider, attempts=attempts, token=token)
    emulator = emulators.suite.apns if provider == "apns" else emulators.suite.fcm
    emulator.faults.add(token, Fault(status=503, times=1))
    assert run(duty, duty.send_ready()) == 1
    row = notice_row(wdb, notice)
    # Claiming made it attempt `attempts + 1`; without jitter its backoff is 2**attempts / 2.
    assert row["attempts"] == attempts + 1
    assert row["status"] == "queued"
    delay = (row["next_attempt_at"] - row["updated_at"]).total_seconds()
    assert delay == 2.0**attempts / 2
    assert duty.sent == 0


def test_every_answer_is_counted_and_only_sent_ones_count_as_sent(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite
) -> None:
    gran = add_relative(wdb, "ios")
    dead = apns_token()
    emulators.suite.apns.faults.add(dead, Fault(status=400, reason="BadDeviceToken", times=1))
    notices = [add_notice(wdb, gran, "apns") for _ in range(3)]
    notices.append(add_notice(wdb, add_relative(wdb, "ios"), "apns", token=dead))
    assert run(duty, duty.send_ready()) == 4
    assert duty.sent == 3
    assert [notice_row(wdb, n)["status"] for n in notices] == ["sent", "sent", "sent", "failed"]
    assert run(duty, duty.send_ready()) == 0  # nothing left: claimed nothing, sent nothing
    assert duty.sent == 3


def test_a_provider_not_configured_is_a_config_fault_not_a_crash(
    wdb: Conn, duty: CancelNotices
) -> None:
    duty.senders = Senders(None, None)
    gran = add_relative(wdb, "android")
    notices = [add_notice(wdb, gran, "fcm"), add_notice(wdb, add_relative(wdb, "ios"), "apns")]
    assert run(duty, duty.send_ready()) == 2
    for notice, variable in zip(
        notices, ["FCM_SERVICE_ACCOUNT_FILE", "APNS_KEY_FILE"], strict=True
    ):
        row = notice_row(wdb, notice)
        assert row["status"] == "queued"  # tried again once configured, within its window
        assert variable in row["last_error"]
    assert duty.sent == 0


def test_the_duty_sleeps_until_the_next_notice_or_the_poll_interval(
    wdb: Conn, duty: CancelNotices
) -> None:
    assert run(duty, duty.seconds_to_next()) == POLL_S  # nothing queued: the poll interval
    gran = add_relative(wdb, "ios")
    later = add_notice(wdb, gran, "apns", send_in_s=3.0)
    wait = run(duty, duty.seconds_to_next())
    db_now = wdb.execute("select now() as now").fetchone()
    assert db_now is not None
    # Until the notice is due by the database's clock (the test's own statements take time).
    assert 0.02 < wait <= 3.0
    assert wait >= (later["send_at"] - db_now["now"]).total_seconds()
    add_notice(wdb, gran, "apns", send_in_s=-5.0)  # one overdue: look again almost at once
    assert run(duty, duty.seconds_to_next()) == 0.02
    wdb.execute("delete from private.cancel_notices")
    add_notice(wdb, gran, "apns", send_in_s=3600.0, deadline_in_s=3700.0)
    assert run(duty, duty.seconds_to_next()) == POLL_S  # far away: never longer than a poll


def test_a_wake_up_sends_a_new_notice_at_once_not_at_the_next_poll(
    wdb: Conn, duty: CancelNotices, emulators: ThreadedSuite
) -> None:
    duty.poll_interval_s = 3600.0  # only a wake-up can make it look again within the test

    async def go() -> None:
        task = asyncio.create_task(duty.run())
        try:
            for n in (1, 2):  # the wake-up is spent each time: a second one works too
                add_notice(wdb, add_relative(wdb, "ios"), "apns")
                duty.wake()
                while duty.sent < n:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(duty, asyncio.wait_for(go(), 30))
    assert duty.sent == 2


def test_the_backoff_while_the_database_is_away_grows_and_starts_again_after_a_success(
    wdb: Conn, duty: CancelNotices, caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    # The database refuses connections (as during a restart) and the pool's connections are
    # cut: each loop fails, and waits DB_RETRY's backoff of its failure count, logged.
    database = wdb.execute("select current_database() as d").fetchone()
    assert database is not None
    name = sql.Identifier(database["d"])
    duty.poll_interval_s = 3600.0

    def away(allow: bool) -> None:
        # From the cluster's main database: a database cannot refuse its own session.
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("alter database {} with allow_connections {}").format(
                name, sql.SQL("true" if allow else "false")))  # fmt: skip
            if not allow:
                admin.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where datname = %s and pid <> %s",
                    [database["d"], wdb.info.backend_pid],
                )

    def waits() -> list[float]:
        return [
            r.retry_in_s  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage() == "cancel notices: database unavailable; retrying"
        ]

    async def until(count: int) -> None:
        while len(waits()) < count:
            await asyncio.sleep(0.05)

    before_success: list[int] = []
    completed: list[str] = []  # the duty's queries that returned, in order
    real_rows = duty.db.rows

    async def rows(name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        result = await real_rows(name, params)
        completed.append(name)
        return result

    duty.db.rows = rows  # type: ignore[method-assign]

    async def go() -> None:
        task = asyncio.create_task(duty.run())
        try:
            await asyncio.sleep(0)
            away(False)
            await asyncio.wait_for(until(2), 60)
            away(True)
            add_notice(wdb, add_relative(wdb, "ios"), "apns")
            # Back: a loop succeeds, to its last query (then the failure count is reset).
            while not (duty.sent and completed[-1:] == ["next_cancel_notice_at"]):
                await asyncio.sleep(0.05)
            # (A loop already failing when connections came back may have logged more.)
            before_success.append(len(waits()))
            away(False)
            duty.wake()
            await asyncio.wait_for(until(before_success[0] + 1), 60)
        finally:
            away(True)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.WARNING, logger="callpanion.worker.cancels"):
        run(duty, asyncio.wait_for(go(), 120))
    first, second = waits()[:2]
    after_success = waits()[before_success[0]]
    assert 0.5 <= first <= 1.0  # failure 1: base 1 s, equal jitter
    assert 1.0 <= second <= 2.0  # failure 2: doubled
    assert 0.5 <= after_success <= 1.0  # counted from 1 again after a success


def test_a_provider_the_duty_does_not_know_is_our_bug(duty: CancelNotices) -> None:
    notice = uuid.uuid4()
    row = {"notice_id": notice, "call_session_id": uuid.uuid4(), "provider": "hms",
           "push_token": "t", "deadline_at": dt.datetime.now(dt.UTC), "attempts": 1}  # fmt: skip
    assert run(duty, duty._send(row)) == {
        "notice_id": str(notice),
        "outcome": "our_bug",
        "provider": "hms",
        "status": 0,
        "reason": "unknown_provider",
        "message_id": None,
        "retry_after_s": None,
        "detail": None,
    }


def test_the_lease_and_the_poll_interval_are_named_never_positional(
    duty: CancelNotices,
) -> None:
    with pytest.raises(TypeError):
        CancelNotices(duty.db, duty.senders, 30.0, 7.0)  # type: ignore[call-arg]
