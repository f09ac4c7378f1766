"""Crash recovery (issue 14): dead workers noticed at once, unique lease owners, a re-send is
the same call, results recorded as they come, ring timeouts at the worker's pace.

Real `callpanion worker` processes and real signals; waiting is on observable conditions.
"""

from __future__ import annotations

import signal
import threading

from python_worker.emulators.faults import ANY, Fault
from python_worker.emulators.suite import ThreadedSuite
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
    session_for,
    slow_providers,
    status_is,
    tokens_of,
    wait_for,
)


def test_a_killed_workers_rows_are_sent_by_a_live_peer_without_waiting_for_the_lease(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    # The survivor claims nothing ahead, the doomed worker two seconds ahead: the doomed one
    # holds every row when it dies, the survivor is running and has to notice.
    survivor = workers.start(CALLPANION_LEASE_SECS="60", CALLPANION_CLAIM_AHEAD_MS="0")
    doomed = workers.start(CALLPANION_LEASE_SECS="60", CALLPANION_CLAIM_AHEAD_MS="2000")
    ids = queue_many(wdb, 40, in_s=1.5)
    wait_for(
        "the doomed worker to hold every row", lambda: metric(doomed, "callpanion_in_flight") == 40
    )
    leases = {
        r["id"]: r["locked_until"]
        for r in wdb.execute(
            "select id, locked_until from notification_queue where id = any(%s)", [ids]
        ).fetchall()
    }
    kill(doomed)
    wait_for("every row sent by the survivor", lambda: all_sent(wdb, ids), timeout=90, every=0.1)
    rows = wdb.execute(
        "select id, sent_at, last_error from notification_queue where id = any(%s)", [ids]
    ).fetchall()
    # Sent while the dead worker's leases still had most of a minute to run.
    assert [r["id"] for r in rows if r["sent_at"] >= leases[r["id"]]] == []
    assert all("is gone (its database session ended)" in (r["last_error"] or "") for r in rows)
    counts = delivered_tokens(emulators)
    assert [t for t in tokens_of(wdb, ids) if counts[t] != 1] == []
    assert metric(survivor, "callpanion_pushes_total") == 40


def test_twin_worker_ids_never_give_back_each_others_rows(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    slow_providers(emulators, 2.0)
    busy = workers.start(CALLPANION_WORKER_ID="twin")
    ids = queue_many(wdb, 30, in_s=0.3)
    wait_for("the busy twin to hold every send", lambda: metric(busy, "callpanion_in_flight") == 30)
    idle = workers.start(CALLPANION_WORKER_ID="twin")
    idle.signal(signal.SIGTERM)
    assert idle.wait(10) == 0
    assert "gave back unsent rows" not in [line["msg"] for line in idle.logs()]
    wait_for("every row sent", lambda: all_sent(wdb, ids), timeout=30, every=0.1)
    counts = delivered_tokens(emulators)
    assert [t for t in tokens_of(wdb, ids) if counts[t] != 1] == []  # each exactly once
    owners = {line.get("lease_owner") for w in (busy, idle) for line in w.logs()} - {None}
    assert len(owners) == 2
    assert all(str(o).startswith("twin#") for o in owners)


def test_a_resend_after_a_crash_carries_the_first_ring_window(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    who = add_relative(wdb, "ios")
    assert who.voip_token is not None
    apns = emulators.suite.apns
    apns.faults.add(ANY, Fault(latency_s=1.5, times=1))
    seen = emulators.suite.apns_server.requests_seen
    doomed = workers.start()
    qid = queue_call(wdb, who)
    wait_for("the push to reach APNs", lambda: emulators.suite.apns_server.requests_seen > seen)
    kill(doomed)
    workers.start()
    wait_for("the re-send to be recorded", lambda: status_is(wdb, qid, "sent"))

    def both_delivered() -> list[dict[str, object]] | None:
        found = [d.payload or {} for d in apns.deliveries if d.token == who.voip_token]
        return found if len(found) == 2 else None

    pushes = wait_for("both pushes to be delivered", both_delivered)
    first, again = sorted(pushes, key=lambda p: -int(str(p["duration"])))
    assert first["id"] == again["id"]  # the same CallKit id
    assert first["expires_at"] == again["expires_at"]  # ...and the same window
    assert int(str(again["duration"])) <= int(str(first["duration"]))
    row = queue_row(wdb, qid)
    session = session_for(wdb, qid)
    assert session["ringing_at"] == row["ring_expires_at"] - session["ring_timeout"]


def test_results_are_recorded_as_they_come_not_when_the_batch_ends(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    # Different providers: a fresh APNs connection carries one stream until its first success,
    # so two iOS pushes would queue behind each other.
    quick, slow = add_relative(wdb, "android", voip=False), add_relative(wdb, "ios")
    assert slow.voip_token is not None
    # The slow push gets no answer until the test says so (not a guessed 3 s, which a loaded
    # machine can outlast before the quick one is recorded).
    answer_slow = threading.Event()
    emulators.suite.apns.faults.add(slow.voip_token.lower(), Fault(hold=answer_slow))
    try:
        worker = workers.start(CALLPANION_CLAIM_AHEAD_MS="2000")
        quick_id, slow_id = queue_call(wdb, quick, in_s=1.0), queue_call(wdb, slow, in_s=1.0)
        wait_for(
            "both rows claimed in one go",
            lambda: count_by_status(wdb, [quick_id, slow_id]) == {"claimed": 2},
        )
        wait_for("the quick push recorded", lambda: status_is(wdb, quick_id, "sent"), timeout=10)
        assert queue_row(wdb, slow_id)["status"] == "claimed"  # still waiting for its answer
    finally:
        answer_slow.set()
    wait_for("the slow push recorded", lambda: status_is(wdb, slow_id, "sent"), timeout=10)
    assert metric(worker, "callpanion_pushes_total") == 2


def test_a_ring_timeout_is_acted_on_by_the_worker_not_pg_crons_minute(
    wdb: Conn, workers: Workers
) -> None:
    # pg_cron does not run in the worker database: only the worker can mark the call missed.
    who = add_relative(wdb, "android", voip=False)
    workers.start()
    qid = queue_call(wdb, who)
    wait_for("the call to ring", lambda: status_is(wdb, qid, "sent"))
    # Its window now ends in a second.
    wdb.execute(
        "update call_sessions set ringing_at = now() - ring_timeout + interval '1 second'"
        " where id = %s",
        [session_for(wdb, qid)["id"]],
    )
    wait_for(
        "the session to be missed", lambda: session_for(wdb, qid)["status"] == "missed", timeout=15
    )
    assert wdb.execute(
        "select kind from alerts where call_session_id = %s", [session_for(wdb, qid)["id"]]
    ).fetchall() == [{"kind": "missed_calls"}]
