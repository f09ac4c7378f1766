"""The worker end to end: real `callpanion worker` processes, real Postgres, real emulators."""

from __future__ import annotations

import signal

from python_worker.emulators.suite import ThreadedSuite
from tests.worker_support import (
    Conn,
    Workers,
    add_relative,
    queue_call,
    session_for,
    status_is,
    wait_for,
)


def test_ios_call_rings_through_apns_voip_at_its_time(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    worker = workers.start()
    gran = add_relative(wdb, "ios")
    qid = queue_call(wdb, gran, in_s=1.0)
    row = wait_for("the push to be recorded", lambda: status_is(wdb, qid, "sent"))
    [delivery] = emulators.suite.apns.deliveries
    session = session_for(wdb, qid)
    assert delivery.token == gran.voip_token
    assert delivery.topic == emulators.suite.bundle_id + ".voip"
    assert delivery.push_type == "voip"
    assert delivery.payload is not None
    assert delivery.payload["id"] == str(session["id"])
    assert delivery.apns_id == str(qid)
    assert row["provider_message_id"] == str(qid)
    assert session["status"] == "ringing"
    lateness = delivery.received_at - row["send_at"].timestamp()
    assert 0 <= lateness < 0.5, lateness  # on time, and never early
    assert emulators.suite.fcm.deliveries == []
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_android_call_rings_through_fcm(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "android", voip=False)
    qid = queue_call(wdb, gran)
    row = wait_for("the push to be recorded", lambda: status_is(wdb, qid, "sent"))
    [delivery] = emulators.suite.fcm.deliveries
    assert delivery.token == gran.fcm_token
    assert delivery.data["kind"] == "incoming_call"
    assert delivery.data["id"] == str(session_for(wdb, qid)["id"])
    assert delivery.android["priority"] == "high"
    assert row["provider_message_id"] == delivery.message_id or row["provider_message_id"].endswith(
        delivery.message_id
    )
