"""The worker end to end: real `callpanion worker` processes, real Postgres, real emulators."""

from __future__ import annotations

import datetime as dt
import signal

import pytest

from python_worker.emulators.faults import Fault
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


@pytest.mark.parametrize(
    ("platform", "fault", "reason"),
    [
        ("ios", Fault(status=503, reason="ServiceUnavailable", times=1), "ServiceUnavailable"),
        (
            "ios",
            Fault(status=429, reason="TooManyRequests", retry_after="1", times=1),
            "TooManyRequests",
        ),
        ("ios", Fault(status=500, reason="InternalServerError", times=1), "InternalServerError"),
        ("ios", Fault(action="drop", times=1), "ConnectionLost"),
        (
            "android",
            Fault(status=503, reason="UNAVAILABLE", retry_after="1", times=1),
            "UNAVAILABLE",
        ),
        ("android", Fault(status=500, reason="INTERNAL", times=1), "INTERNAL"),
        ("android", Fault(status=429, reason="QUOTA_EXCEEDED", times=1), "QUOTA_EXCEEDED"),
        ("android", Fault(action="goaway", times=1), None),
    ],
)
def test_each_transient_failure_is_retried_until_sent(
    wdb: Conn,
    workers: Workers,
    emulators: ThreadedSuite,
    platform: str,
    fault: Fault,
    reason: str | None,
) -> None:
    workers.start()
    gran = add_relative(wdb, platform, voip=platform == "ios")
    token = gran.voip_token if platform == "ios" else gran.fcm_token
    assert token is not None
    provider = emulators.suite.apns if platform == "ios" else emulators.suite.fcm
    provider.faults.add(token, fault)
    qid = queue_call(wdb, gran)
    row = wait_for("the retried push to be recorded", lambda: status_is(wdb, qid, "sent"))
    assert session_for(wdb, qid)["status"] == "ringing"
    if reason is None:  # a GOAWAY before the stream: resent on a new connection at once
        assert row["provider_attempts"] >= 1
    else:
        assert row["provider_attempts"] == 2
        assert reason in row["last_error"]
    if fault.retry_after is not None:
        assert row["sent_at"] - row["send_at"] >= dt.timedelta(seconds=1)
    delivered = [d for d in provider.deliveries if d.token == token]
    assert len(delivered) == 1


def test_a_call_still_failing_at_its_deadline_expires_and_the_family_is_told(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "android", voip=False)
    assert gran.fcm_token is not None
    emulators.suite.fcm.faults.add(gran.fcm_token, Fault(status=503, reason="UNAVAILABLE"))
    qid = queue_call(wdb, gran, deadline_s=2.5)
    row = wait_for("the call to expire", lambda: status_is(wdb, qid, "expired"))
    assert row["provider_attempts"] >= 2
    assert "past the deadline" in row["last_error"]
    session = session_for(wdb, qid)
    assert session["status"] == "expired"
    kinds = [
        a["kind"]
        for a in wdb.execute("select kind from alerts where call_session_id = %s", [session["id"]])
    ]
    assert kinds == ["call_expired"]
    assert emulators.suite.fcm.deliveries == []


def test_dead_voip_token_falls_back_to_fcm_and_is_marked_invalid(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "ios")
    assert gran.voip_token is not None
    emulators.suite.apns.set_token(gran.voip_token, "unregistered")
    qid = queue_call(wdb, gran)
    row = wait_for("the fallback push to be recorded", lambda: status_is(wdb, qid, "sent"))
    assert (row["provider"], row["push_token"]) == ("fcm", gran.fcm_token)
    [delivery] = emulators.suite.fcm.deliveries
    assert delivery.token == gran.fcm_token
    assert delivery.data["id"] == str(session_for(wdb, qid)["id"])  # the same CallKit id
    device = wdb.execute("select * from device_pairs where id = %s", [gran.device]).fetchone()
    assert device is not None
    assert device["voip_token_invalidated_at"] is not None
    assert device["voip_token_invalid_reason"] == "Unregistered (apns 410)"
    assert device["fcm_token_invalidated_at"] is None
    assert session_for(wdb, qid)["status"] == "ringing"


def test_dead_token_without_fallback_fails_the_call_and_alerts(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "android", voip=False)
    assert gran.fcm_token is not None
    emulators.suite.fcm.set_token(gran.fcm_token, "unregistered")
    qid = queue_call(wdb, gran)
    wait_for("the call to fail", lambda: status_is(wdb, qid, "failed"))
    session = session_for(wdb, qid)
    assert session["status"] == "failed"
    device = wdb.execute(
        "select fcm_token_invalid_reason from device_pairs where id = %s", [gran.device]
    ).fetchone()
    assert device == {"fcm_token_invalid_reason": "UNREGISTERED (fcm 404)"}
    alerts = wdb.execute(
        "select kind, severity from alerts where call_session_id = %s", [session["id"]]
    ).fetchall()
    assert alerts == [{"kind": "invalid_token", "severity": "critical"}]
    assert emulators.suite.fcm.deliveries == []
