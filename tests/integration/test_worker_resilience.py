"""Several workers, crashes, restarts and signals: every call is sent, none is lost.

Real `callpanion worker` processes, real signals (SIGTERM, SIGKILL), a real Postgres restart.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.emulators.faults import ANY, Fault
from python_worker.emulators.suite import ThreadedSuite
from python_worker.stack.cluster import LocalStack
from tests.support.db import throwaway_stack
from tests.support.worker import (
    Conn,
    Workers,
    add_relative,
    all_sent,
    count_by_status,
    delivered_tokens,
    kill,
    metric,
    queue_call,
    queue_many,
    queue_row,
    slow_providers,
    status_is,
    tokens_of,
    wait_for,
)


def test_two_workers_share_2000_due_rows_and_send_each_exactly_once(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    a = workers.start(CALLPANION_BATCH_SIZE="200", CALLPANION_LOG_LEVEL="WARNING")
    b = workers.start(CALLPANION_BATCH_SIZE="200", CALLPANION_LOG_LEVEL="WARNING")
    ids = queue_many(wdb, 2000, in_s=1.0)
    assert len(ids) == 2000
    wait_for("2000 rows sent", lambda: all_sent(wdb, ids), timeout=60, every=0.2)
    counts = delivered_tokens(emulators)
    tokens = tokens_of(wdb, ids)
    assert len(set(tokens)) == 2000
    assert [t for t in tokens if counts[t] != 1] == []  # each exactly once
    assert sum(counts.values()) == 2000
    sent_by = [metric(w, "callpanion_pushes_total") for w in (a, b)]
    assert sum(sent_by) == 2000
    assert min(sent_by) > 0, sent_by  # both took a share
    sessions = wdb.execute(
        "select c.status, count(*) as n from call_sessions c join notification_queue q"
        " on q.call_session_id = c.id where q.id = any(%s) group by c.status",
        [ids],
    ).fetchall()
    assert sessions == [{"status": "ringing", "n": 2000}]


def test_a_killed_workers_rows_are_sent_by_the_next_worker_to_start(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    # Every push takes 3 s to answer, so the first worker dies with its batch in flight.
    slow_providers(emulators, 3.0)
    doomed = workers.start()
    ids = queue_many(wdb, 50, in_s=0.5)
    wait_for(
        "the first worker to claim the batch",
        lambda: count_by_status(wdb, ids).get("claimed") == 50,
    )
    wait_for(
        "the first sends to reach the providers",
        lambda: (
            emulators.suite.apns.faults.snapshot() is not None
            and metric(doomed, "callpanion_in_flight") == 50
        ),
    )
    kill(doomed)
    emulators.suite.apns.faults.clear()
    emulators.suite.fcm.faults.clear()
    rescuer = workers.start()
    wait_for("every row sent by the rescuer", lambda: all_sent(wdb, ids), timeout=30)
    rows = wdb.execute(
        "select last_error, provider_attempts from notification_queue where id = any(%s)", [ids]
    ).fetchall()
    # Taken back because the dead worker's presence lock is gone, not its (5 s) lease.
    gone = f"worker {doomed.worker_id}#"
    assert all(gone in (r["last_error"] or "") for r in rows)
    assert all("is gone (its database session ended)" in (r["last_error"] or "") for r in rows)
    assert all(r["provider_attempts"] == 2 for r in rows)
    counts = delivered_tokens(emulators)
    assert all(counts[t] >= 1 for t in tokens_of(wdb, ids))  # none lost (a resend is harmless)
    assert metric(rescuer, "callpanion_pushes_total") == 50


def test_sigterm_finishes_running_sends_and_gives_back_the_rest(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    emulators.suite.fcm.faults.add(ANY, Fault(latency_s=1.0))
    worker = workers.start(CALLPANION_CLAIM_AHEAD_MS="15000")
    android = add_relative(wdb, "android", voip=False)
    running = queue_call(wdb, android)  # sent at once, answered a second later
    ios = add_relative(wdb, "ios")
    # Claimed ahead, not yet due when SIGTERM comes: 12 s of margin (it was 4 s, which a loaded
    # machine can spend on the two waits below, and then the row is due and sent).
    later = queue_call(wdb, ios, in_s=12.0)
    wait_for("both rows to be claimed", lambda: queue_row(wdb, later)["status"] == "claimed")
    wait_for(
        "the running send to start",
        lambda: metric(worker, "callpanion_push_lateness_seconds_count") >= 1,
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert queue_row(wdb, running)["status"] == "sent"  # finished and recorded before exiting
    given_back = queue_row(wdb, later)
    assert (given_back["status"], given_back["locked_by"], given_back["provider_attempts"]) == (
        "due",
        None,
        0,
    )
    assert emulators.suite.apns.deliveries == []
    assert wdb.execute(
        "select count(*) as n from notification_queue where status = 'claimed'"
    ).fetchone() == {"n": 0}
    logs = [line["msg"] for line in worker.logs()]
    assert "gave back unsent rows" in logs
    assert logs[-1] == "worker stopped"
    workers.start()
    wait_for(
        "the given-back row to be sent by the next worker",
        lambda: status_is(wdb, later, "sent"),
        timeout=40,
    )


def test_sigterm_with_a_hung_provider_exits_within_the_grace(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    emulators.suite.apns.faults.add(ANY, Fault(latency_s=30.0))
    worker = workers.start(CALLPANION_SHUTDOWN_GRACE_SECS="1")
    qid = queue_call(wdb, add_relative(wdb, "ios"))
    wait_for("the send to start", lambda: metric(worker, "callpanion_in_flight") == 1)
    worker.signal(signal.SIGTERM)
    assert worker.wait(8) == 0
    row = queue_row(wdb, qid)
    assert (row["status"], row["locked_by"]) == ("due", None)  # given back for another worker


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalStack, str]]:
    """A cluster of its own, so restarting it disturbs no other test."""
    with throwaway_stack("worker-restart") as stack:
        stack.up(apply=False)
        yield stack, stack.create_migrated_database("restart")  # dropped with the cluster


def test_the_worker_survives_a_postgres_restart_and_loses_nothing(
    own_cluster: tuple[LocalStack, str], emulators: ThreadedSuite, tmp_path: object
) -> None:
    stack, url = own_cluster
    pool = Workers(url, emulators, tmp_path)  # type: ignore[arg-type]
    try:
        worker = pool.start(CALLPANION_POLL_INTERVAL_SECS="1")
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            before = queue_call(conn, add_relative(conn, "ios"), in_s=2.0)
        stack.down()  # fast shutdown: every connection is cut
        wait_for("the worker to notice", lambda: metric(worker, "callpanion_db_up") == 0)
        assert worker.process.poll() is None  # still running
        stack.up(apply=False)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            wait_for(
                "the row queued before the restart to be sent",
                lambda: status_is(conn, before, "sent"),
                timeout=30,
            )
            after = queue_call(conn, add_relative(conn, "android", voip=False))
            wait_for(
                "a row queued after the restart to be sent",
                lambda: status_is(conn, after, "sent"),
                timeout=15,
            )
        wait_for("healthy again", worker.healthy)
        assert metric(worker, "callpanion_db_errors_total") >= 1
    finally:
        pool.stop_all()


def test_a_send_slower_than_the_lease_keeps_its_lease_and_is_sent_once(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    # The lease is 5 s; the provider takes 7 s to answer. Renewal keeps the row, so the
    # second worker never takes it over and nobody sends it twice.
    gran = add_relative(wdb, "ios")
    assert gran.voip_token is not None
    emulators.suite.apns.faults.add(gran.voip_token, Fault(latency_s=7.0, times=1))
    slow = workers.start()
    qid = queue_call(wdb, gran)
    wait_for("the slow send to start", lambda: metric(slow, "callpanion_in_flight") == 1)
    other = workers.start()
    row = wait_for("the slow push to be recorded", lambda: status_is(wdb, qid, "sent"), timeout=20)
    assert row["provider_attempts"] == 1
    assert row["last_error"] is None
    assert len(emulators.suite.apns.deliveries) == 1
    assert metric(other, "callpanion_pushes_total") == 0
    assert metric(slow, 'callpanion_push_results_total{result="sent"}') == 1
