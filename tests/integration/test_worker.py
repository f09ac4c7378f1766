"""The worker end to end: real `callpanion worker` processes, real Postgres, real emulators."""

from __future__ import annotations

import datetime as dt
import json
import signal
import uuid

import pytest

from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import ThreadedSuite
from tests.support.realtime_standin import realtime_standin
from tests.support.worker import (
    Conn,
    Workers,
    add_relative,
    metric,
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


def test_call_now_rings_within_a_second(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start()
    gran = add_relative(wdb, "ios")
    with wdb.transaction():
        wdb.execute("set local role service_role")
        wdb.execute("select set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)")
        session = wdb.execute("select request_call_now(%s) as id", [gran.relative]).fetchone()
    assert session is not None
    qid = wdb.execute(
        "select id from notification_queue where call_session_id = %s", [session["id"]]
    ).fetchone()
    assert qid is not None
    row = wait_for("the call to ring", lambda: status_is(wdb, qid["id"], "sent"))
    [delivery] = emulators.suite.apns.deliveries
    assert delivery.received_at - row["created_at"].timestamp() < 1.0


def test_a_lost_notify_is_covered_by_the_poll_and_then_the_timer_is_exact(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    worker = workers.start(CALLPANION_POLL_INTERVAL_SECS="0.5")
    gran = add_relative(wdb, "android", voip=False)
    qid = queue_call(wdb, gran, in_s=2.0, silent=True)  # no NOTIFY at all
    row = wait_for("the silently queued call to be sent", lambda: status_is(wdb, qid, "sent"))
    [delivery] = emulators.suite.fcm.deliveries
    lateness = delivery.received_at - row["send_at"].timestamp()
    assert 0 <= lateness < 0.25, lateness  # the poll found it; the timer fired on time
    assert metric(worker, "callpanion_wakeups_total") == 0  # no hint ever came


def test_a_due_row_without_any_hint_is_sent_within_the_poll_interval(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    workers.start(CALLPANION_WAKEUP="poll", CALLPANION_POLL_INTERVAL_SECS="1")
    gran = add_relative(wdb, "ios")
    qid = queue_call(wdb, gran, silent=True)
    row = wait_for("the call to be sent", lambda: status_is(wdb, qid, "sent"))
    assert row["sent_at"] - row["send_at"] < dt.timedelta(seconds=1.5)


def test_notify_wakes_the_worker_long_before_its_poll(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    worker = workers.start(CALLPANION_POLL_INTERVAL_SECS="60")
    gran = add_relative(wdb, "ios")
    qid = queue_call(wdb, gran)
    row = wait_for("the call to be sent", lambda: status_is(wdb, qid, "sent"))
    assert row["sent_at"] - row["send_at"] < dt.timedelta(seconds=0.5)
    assert metric(worker, "callpanion_wakeups_total") >= 1


def test_healthz_metrics_and_json_logs_carry_the_calls_ids(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    worker = workers.start()
    gran = add_relative(wdb, "ios")
    qid = queue_call(wdb, gran)
    wait_for("the call to be sent", lambda: status_is(wdb, qid, "sent"))
    status, body = worker.get("/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok"
    assert health["worker_id"] == worker.worker_id
    assert (health["wakeup"], health["wakeup_connected"]) == ("notify", True)
    text = worker.get("/metrics")[1].decode()
    assert 'callpanion_pushes_total{outcome="delivered",provider="apns"} 1.0' in text
    assert 'callpanion_push_results_total{result="sent"} 1.0' in text
    assert "callpanion_push_lateness_seconds_count 1.0" in text
    assert 'callpanion_queue_rows{status="claimed"} 0.0' in text
    assert "callpanion_db_up 1.0" in text
    assert worker.get("/nope")[0] == 404
    session = session_for(wdb, qid)
    [push_line] = [line for line in worker.logs() if line["msg"] == "push delivered"]
    assert push_line["queue_id"] == str(qid)
    assert push_line["call_session_id"] == str(session["id"])
    assert push_line["household_id"] == str(gran.household)
    assert push_line["level"] == "info"
    assert {"ts", "logger", "provider", "lateness_ms"} <= set(push_line)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CALLPANION_WAKEUP": "carrier-pigeon"},
            "CALLPANION_WAKEUP must be one of notify, realtime, poll",
        ),
        (
            {"CALLPANION_WAKEUP": "realtime"},
            "CALLPANION_WAKEUP=realtime needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
        ),
        (
            {"CALLPANION_BATCH_SIZE": "0"},
            "CALLPANION_BATCH_SIZE must be between 1 and 10000, got 0",
        ),
        (
            {"CALLPANION_POLL_INTERVAL_SECS": "soon"},
            "CALLPANION_POLL_INTERVAL_SECS must be a number, got 'soon'",
        ),
        ({"APNS_KEY_FILE": "/nonexistent.p8"}, "APNS_KEY_FILE: no such file: /nonexistent.p8"),
    ],
)
def test_bad_configuration_stops_the_worker_with_a_clear_message(
    workers: Workers, env: dict[str, str], message: str
) -> None:
    worker = workers.start(wait_healthy=False, **env)
    assert worker.wait(30) == 1
    assert f"error: {message}" in worker.log_file.read_text()


@pytest.mark.filterwarnings(
    "ignore:ConnectionClosed.(code|reason) is deprecated:DeprecationWarning"
)
def test_realtime_mode_wakes_the_worker_from_a_real_insert(
    worker_database: str, wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    key = "service-" + uuid.uuid4().hex
    with realtime_standin(worker_database, key) as standin:
        worker = workers.start(
            CALLPANION_WAKEUP="realtime",
            SUPABASE_URL=standin.url,
            SUPABASE_SERVICE_ROLE_KEY=key,
            CALLPANION_POLL_INTERVAL_SECS="60",  # only a hint can wake it in time
        )
        wait_for(
            "the change feed to be live",
            lambda: json.loads(worker.get("/healthz")[1])["wakeup_connected"],
        )
        gran = add_relative(wdb, "ios")
        qid = queue_call(wdb, gran)
        row = wait_for("the call to be sent", lambda: status_is(wdb, qid, "sent"))
        assert row["sent_at"] - row["send_at"] < dt.timedelta(seconds=1)
        assert metric(worker, "callpanion_wakeups_total") >= 1
        assert standin.counts.deliveries >= 1
        worker.stop()  # before the stand-in goes away
