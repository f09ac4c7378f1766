"""The worker's SQL functions, driven deterministically through p_now (no wall clock).

claim_due_calls / record_push_results / renew_leases / release_leases: the queue row and
session transitions of every push outcome, the lease compare-and-set, and bad input.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from tests.integration.test_scheduler import LEAD, Family, add_family, add_schedule, phase1, phase2
from tests.support.db import Conn, acting_as, one
from tests.support.worker import wait_for
from tests.support.world import apns_token, fcm_token

AT = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)  # the occurrence every test queues
LEASE = timedelta(seconds=30)


def queued_call(db: Conn, platform: str = "ios", **family: Any) -> tuple[Family, uuid.UUID]:
    """A family with one call queued by phase 1 for AT; returns the family and the queue id."""
    fam = add_family(db, "UTC", platform, **family)
    add_schedule(db, fam, local_time=time(9, 0))
    phase1(db, AT - LEAD)
    row = one(db, "select id from notification_queue where household_id = %s", [fam.household])
    return fam, row["id"]  # type: ignore[return-value]


def claim(db: Conn, worker: str, at: datetime, limit: int = 100) -> list[dict[str, Any]]:
    return db.execute(
        "select * from claim_due_calls(%s, %s, %s, %s)", [worker, limit, LEASE, at]
    ).fetchall()


def record(db: Conn, worker: str, at: datetime, *results: dict[str, Any]) -> dict[Any, str]:
    rows = db.execute(
        "select * from record_push_results(%s, %s, %s)", [worker, json.dumps(list(results)), at]
    ).fetchall()
    return {r["queue_id"]: str(r["result"]) for r in rows}


def result(queue_id: uuid.UUID, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"queue_id": str(queue_id), "outcome": outcome, **extra}


def queue_row(db: Conn, queue_id: object) -> dict[str, Any]:
    return one(db, "select * from notification_queue where id = %s", [queue_id])


def session_of(db: Conn, queue_id: object) -> dict[str, Any]:
    return one(
        db,
        "select c.* from call_sessions c join notification_queue q on q.call_session_id = c.id where q.id = %s",
        [queue_id],
    )


def alerts(db: Conn, household: object) -> list[str]:
    rows = db.execute(
        "select kind from alerts where household_id = %s order by created_at", [household]
    ).fetchall()
    return [str(r["kind"]) for r in rows]


def test_a_queued_row_is_claimed_at_its_send_at_not_before_and_only_once(db: Conn) -> None:
    _fam, qid = queued_call(db)
    assert claim(db, "w1", AT - timedelta(milliseconds=1)) == []
    [row] = claim(db, "w1", AT)
    assert row["queue_id"] == qid
    assert (row["provider"], row["platform"], row["attempt"], row["provider_attempts"]) == (
        "apns",
        "ios",
        1,
        1,
    )
    assert row["locked_until"] == AT + LEASE
    assert row["payload"]["relative_name"] == "Nan"
    stored = queue_row(db, qid)
    assert (stored["status"], stored["locked_by"]) == ("claimed", "w1")
    assert claim(db, "w2", AT + timedelta(seconds=1)) == []  # held by w1


def test_claim_sends_to_the_token_the_device_has_now(db: Conn) -> None:
    fam, qid = queued_call(db)
    fresh = apns_token()
    db.execute("update device_pairs set voip_token = %s where id = %s", [fresh, fam.device])
    [row] = claim(db, "w1", AT)
    assert row["push_token"] == fresh
    assert queue_row(db, qid)["push_token"] == fresh


def test_claim_cancels_a_row_whose_call_moved_on(db: Conn) -> None:
    fam, qid = queued_call(db)
    db.execute(
        "update call_sessions set status = 'accepted', answered_at = %s where household_id = %s",
        [AT, fam.household],
    )
    assert claim(db, "w1", AT) == []
    stored = queue_row(db, qid)
    assert (stored["status"], stored["last_error"]) == (
        "cancelled",
        "not sent: the call is already accepted",
    )


def test_claim_fails_a_call_whose_device_was_unpaired_and_tells_the_family(db: Conn) -> None:
    fam, qid = queued_call(db)
    db.execute(
        "update device_pairs set status = 'revoked', revoked_at = now() where id = %s", [fam.device]
    )
    assert claim(db, "w1", AT) == []
    assert queue_row(db, qid)["status"] == "failed"
    session = session_of(db, qid)
    assert (session["status"], session["failure_reason"]) == ("failed", "no active paired device")
    assert alerts(db, fam.household) == ["no_device"]


def test_a_row_past_its_deadline_is_left_for_phase2_to_expire(db: Conn) -> None:
    fam, qid = queued_call(db)
    late = AT + timedelta(minutes=2, seconds=1)
    assert claim(db, "w1", late) == []
    phase2(db, late)
    assert queue_row(db, qid)["status"] == "expired"
    assert alerts(db, fam.household) == ["call_expired"]


def test_delivered_marks_the_row_sent_and_the_session_ringing(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    at = AT + timedelta(milliseconds=40)
    assert record(db, "w1", at, result(qid, "delivered", provider="apns", message_id="m-1")) == {
        qid: "sent"
    }
    stored = queue_row(db, qid)
    assert (stored["status"], stored["sent_at"], stored["provider_message_id"]) == (
        "sent",
        at,
        "m-1",
    )
    assert (stored["locked_by"], stored["locked_until"]) == (None, None)
    session = session_of(db, qid)
    # Ringing from the start of the ring window the push carried (as the phone counts it).
    assert (session["status"], session["ringing_at"]) == ("ringing", AT)


def test_delivered_leaves_a_session_the_phone_already_answered(db: Conn) -> None:
    fam, qid = queued_call(db)
    claim(db, "w1", AT)
    db.execute(
        "update call_sessions set status = 'accepted', answered_at = %s where household_id = %s",
        [AT, fam.household],
    )
    assert record(db, "w1", AT, result(qid, "delivered")) == {qid: "sent"}
    assert session_of(db, qid)["status"] == "accepted"


def test_retry_waits_for_its_delay_and_counts_provider_attempts(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    got = record(
        db,
        "w1",
        AT,
        result(
            qid, "retry", provider="apns", status=503, reason="ServiceUnavailable", retry_after_s=5
        ),
    )
    assert got == {qid: "retry"}
    stored = queue_row(db, qid)
    assert (stored["status"], stored["next_attempt_at"], stored["send_at"]) == (
        "due",
        AT + timedelta(seconds=5),
        AT,
    )
    assert stored["last_error"] == "apns 503 ServiceUnavailable"
    assert claim(db, "w1", AT + timedelta(seconds=4)) == []
    [again] = claim(db, "w2", AT + timedelta(seconds=5))
    assert again["provider_attempts"] == 2
    assert session_of(db, qid)["status"] == "queued"


def test_retry_past_the_deadline_expires_the_call_and_tells_the_family(db: Conn) -> None:
    fam, qid = queued_call(db)
    claim(db, "w1", AT + timedelta(seconds=100))
    got = record(
        db, "w1", AT + timedelta(seconds=100), result(qid, "retry", status=500, retry_after_s=30)
    )
    assert got == {qid: "expired"}
    assert queue_row(db, qid)["status"] == "expired"
    session = session_of(db, qid)
    assert session["status"] == "expired"
    assert session["failure_reason"].startswith("the push could not be sent before its deadline")
    assert alerts(db, fam.household) == ["call_expired"]


def test_dead_voip_token_is_invalidated_and_the_fcm_fallback_tried_at_once(db: Conn) -> None:
    fam, qid = queued_call(db)
    [row] = claim(db, "w1", AT)
    dead = row["push_token"]
    got = record(
        db,
        "w1",
        AT,
        result(qid, "token_dead", provider="apns", token=dead, status=410, reason="Unregistered"),
    )
    assert got == {qid: "fallback"}
    device = one(db, "select * from device_pairs where id = %s", [fam.device])
    assert device["voip_token_invalidated_at"] == AT
    assert device["voip_token_invalid_reason"] == "Unregistered (apns 410)"
    assert device["fcm_token_invalidated_at"] is None
    stored = queue_row(db, qid)
    assert (stored["status"], stored["provider"], stored["push_token"]) == (
        "due",
        "fcm",
        device["fcm_token"],
    )
    assert stored["fallback_token"] is None
    [again] = claim(db, "w1", AT)  # at once, not after a backoff
    assert (again["provider"], again["push_token"]) == ("fcm", device["fcm_token"])
    assert record(db, "w1", AT, result(qid, "delivered")) == {qid: "sent"}
    assert session_of(db, qid)["status"] == "ringing"


def test_dead_token_without_fallback_fails_the_call_and_alerts(db: Conn) -> None:
    fam, qid = queued_call(db, "android", voip=False)
    [row] = claim(db, "w1", AT)
    got = record(
        db,
        "w1",
        AT,
        result(
            qid,
            "token_dead",
            provider="fcm",
            token=row["push_token"],
            status=404,
            reason="UNREGISTERED",
        ),
    )
    assert got == {qid: "failed"}
    device = one(db, "select * from device_pairs where id = %s", [fam.device])
    assert device["fcm_token_invalid_reason"] == "UNREGISTERED (fcm 404)"
    session = session_of(db, qid)
    assert session["status"] == "failed"
    assert "push token is no longer valid" in session["failure_reason"]
    assert alerts(db, fam.household) == ["invalid_token"]


def test_a_token_refreshed_meanwhile_is_not_invalidated_but_used(db: Conn) -> None:
    fam, qid = queued_call(db, "android", voip=False)
    [row] = claim(db, "w1", AT)
    fresh = fcm_token()
    db.execute("update device_pairs set fcm_token = %s where id = %s", [fresh, fam.device])
    got = record(
        db, "w1", AT, result(qid, "token_dead", provider="fcm", token=row["push_token"], status=404)
    )
    assert got == {qid: "fallback"}
    assert one(
        db, "select fcm_token_invalidated_at from device_pairs where id = %s", [fam.device]
    ) == {"fcm_token_invalidated_at": None}
    assert queue_row(db, qid)["push_token"] == fresh


def test_config_fault_retries_after_at_least_ten_seconds_and_alerts_once(db: Conn) -> None:
    fam, qid = queued_call(db)
    claim(db, "w1", AT)
    fault = result(qid, "config_fault", provider="apns", status=403, reason="InvalidProviderToken")
    assert record(db, "w1", AT, fault) == {qid: "retry"}
    assert queue_row(db, qid)["next_attempt_at"] == AT + timedelta(seconds=10)
    claim(db, "w1", AT + timedelta(seconds=10))
    assert record(db, "w1", AT + timedelta(seconds=10), fault) == {qid: "retry"}
    assert alerts(db, fam.household) == ["provider_config"]


def test_our_bug_fails_the_call_without_retry(db: Conn) -> None:
    fam, qid = queued_call(db)
    claim(db, "w1", AT)
    got = record(
        db, "w1", AT, result(qid, "our_bug", provider="apns", status=400, reason="BadTopic")
    )
    assert got == {qid: "failed"}
    assert session_of(db, qid)["status"] == "failed"
    assert alerts(db, fam.household) == ["call_failed"]
    assert claim(db, "w1", AT + timedelta(seconds=30)) == []


def test_a_late_worker_cannot_record_after_its_lease_ran_out(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "slow", AT)
    after = AT + LEASE + timedelta(seconds=1)
    [row] = claim(db, "rescuer", after)  # the expired lease comes back at once
    assert row["provider_attempts"] == 2
    assert queue_row(db, qid)["last_error"] == "lease of slow expired"
    assert record(db, "slow", after, result(qid, "delivered", message_id="late")) == {
        qid: "lost_lease"
    }
    stored = queue_row(db, qid)
    assert (stored["status"], stored["locked_by"], stored["provider_message_id"]) == (
        "claimed",
        "rescuer",
        None,
    )
    assert record(db, "rescuer", after, result(qid, "delivered", message_id="m")) == {qid: "sent"}


def test_a_lease_is_not_recorded_once_expired_even_if_nobody_took_it(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    late = AT + LEASE + timedelta(milliseconds=1)
    assert record(db, "w1", late, result(qid, "delivered")) == {qid: "lost_lease"}
    assert queue_row(db, qid)["status"] == "claimed"


def test_renew_extends_only_the_owners_live_leases(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    renewed = db.execute(
        "select * from renew_leases('w2', %s, %s, %s)", [[qid], LEASE, AT + timedelta(seconds=20)]
    ).fetchall()
    assert renewed == []
    renewed = db.execute(
        "select * from renew_leases('w1', %s, %s, %s)", [[qid], LEASE, AT + timedelta(seconds=20)]
    ).fetchall()
    assert len(renewed) == 1
    assert queue_row(db, qid)["locked_until"] == AT + timedelta(seconds=50)


def test_release_gives_rows_back_uncounted(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    assert db.execute("select * from release_leases('w2')").fetchall() == []
    assert len(db.execute("select * from release_leases('w1')").fetchall()) == 1
    stored = queue_row(db, qid)
    assert (stored["status"], stored["locked_by"], stored["provider_attempts"]) == ("due", None, 0)
    [again] = claim(db, "w2", AT)
    assert again["provider_attempts"] == 1


def test_next_work_at_gives_the_earliest_send_and_lease_expiry(db: Conn) -> None:
    db.execute("delete from notification_queue")  # (rolled back with the test)
    db.execute("delete from call_sessions where status = 'ringing'")
    nothing = {"ring_ends_at": None, "peer_leases": False}
    assert one(db, "select * from next_work_at(%s)", [AT]) == {
        "send_at": None,
        "lease_expires_at": None,
        **nothing,
    }
    _fam, _qid = queued_call(db)
    assert one(db, "select * from next_work_at(%s)", [AT]) == {
        "send_at": AT,
        "lease_expires_at": None,
        **nothing,
    }
    claim(db, "w1", AT)
    assert one(db, "select * from next_work_at(%s)", [AT]) == {
        "send_at": None,
        "lease_expires_at": AT + LEASE,
        **nothing,
    }
    # A row past its deadline is work too: the next claim expires it.
    db.execute(
        "update notification_queue set status = 'due', locked_by = null, locked_until = null"
    )
    assert one(db, "select * from next_work_at(%s)", [AT + timedelta(minutes=3)])["send_at"] == AT


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"x": 1}, "invalid p_results: a JSON array of results is required"),
        ([1], "invalid p_results[0]: is not an object"),
        ([{"outcome": "delivered"}], "invalid p_results[0]: queue_id is missing"),
        (
            [{"queue_id": "nope", "outcome": "delivered"}],
            "invalid p_results[0]: queue_id is not a UUID",
        ),
        (
            [
                {"queue_id": str(uuid.uuid4()), "outcome": "delivered"},
                {"queue_id": str(uuid.uuid4()), "outcome": "lost"},
            ],
            "invalid p_results[1]: outcome is not one of delivered, retry, token_dead, config_fault, our_bug",
        ),
        (
            [{"queue_id": str(uuid.uuid4()), "outcome": "token_dead"}],
            "invalid p_results[0]: token is missing (the dead token must be named)",
        ),
        (
            [{"queue_id": str(uuid.uuid4()), "outcome": "retry", "retry_after_s": "soon"}],
            "invalid p_results[0]: retry_after_s is not a number",
        ),
    ],
)
def test_bad_results_are_refused_naming_the_field_and_change_nothing(
    db: Conn, results: object, message: str
) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    # A valid result first: the whole batch is refused, nothing half-applied (so the index
    # in the message moves up by one).
    batch = [result(qid, "delivered"), *results] if isinstance(results, list) else results
    with pytest.raises(errors.InvalidParameterValue) as caught, db.transaction():
        db.execute("select * from record_push_results('w1', %s, %s)", [json.dumps(batch), AT])
    shifted = re.sub(r"\[(\d+)\]", lambda m: f"[{int(m.group(1)) + 1}]", message)
    assert caught.value.diag.message_primary == shifted
    assert queue_row(db, qid)["status"] == "claimed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("", 10, "30 seconds"),
            "invalid p_worker: a worker id of 1 to 200 characters is required",
        ),
        (("w", 0, "30 seconds"), "invalid p_limit: 0 is not between 1 and 10000"),
        (("w", 10, "0 seconds"), "invalid p_lease: 00:00:00 is not between 1 second and 1 hour"),
    ],
)
def test_bad_claim_arguments_are_refused_clearly(
    db: Conn, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as caught, db.transaction():
        db.execute("select * from claim_due_calls(%s, %s, %s::interval)", list(args))
    assert caught.value.diag.message_primary == message


def test_family_members_and_strangers_cannot_touch_the_queue(db: Conn) -> None:
    fam, _qid = queued_call(db)
    for role, user in (("authenticated", fam.member), ("anon", None)):
        for statement in (
            "select * from claim_due_calls('me')",
            "select * from record_push_results('me', '[]')",
            "select * from release_leases('me')",
            "select * from next_work_at()",
        ):
            with acting_as(db, role, user), pytest.raises(errors.InsufficientPrivilege):
                db.execute(statement)
    with acting_as(db, "service_role"):
        assert (
            len(
                db.execute(
                    "select * from claim_due_calls('w1', 10, '30 seconds', %s)", [AT]
                ).fetchall()
            )
            >= 1
        )


def test_claim_ahead_takes_rows_due_within_the_horizon_and_says_when_to_send(db: Conn) -> None:
    _fam, qid = queued_call(db)
    early = AT - timedelta(milliseconds=800)
    rows = db.execute(
        "select * from claim_due_calls('w1', 10, %s, %s, %s)", [LEASE, early, timedelta(seconds=1)]
    ).fetchall()
    assert [(r["queue_id"], r["not_before"]) for r in rows] == [(qid, AT)]
    assert rows[0]["locked_until"] == early + timedelta(seconds=1) + LEASE
    record(db, "w1", AT, result(qid, "retry", retry_after_s=2))
    [again] = db.execute(
        "select * from claim_due_calls('w1', 10, %s, %s, %s)",
        [LEASE, AT + timedelta(seconds=1), timedelta(seconds=1)],
    ).fetchall()
    assert again["not_before"] == AT + timedelta(seconds=2)  # the retry's time, not send_at


# -- issue 14: presence, overdue rows, the fixed ring window ---------------------------------


def test_claim_expires_rows_past_their_deadline_as_phase_2_would(db: Conn) -> None:
    _fam, qid = queued_call(db)
    late = AT + timedelta(minutes=3)  # past the two-minute grace
    assert claim(db, "w1", late) == []
    stored = queue_row(db, qid)
    assert (stored["status"], stored["last_error"]) == ("expired", "deadline passed before sending")
    session = session_of(db, qid)
    assert (session["status"], session["ended_at"]) == ("expired", late)
    alert = one(db, "select kind from alerts where call_session_id = %s", [session["id"]])
    assert alert == {"kind": "call_expired"}


def test_a_dead_owners_rows_are_claimed_again_before_its_lease_ends(
    db: Conn, database_url: str
) -> None:
    fam, qid = queued_call(db)
    db.execute("commit")  # the presence lock lives in another session, which must see the row
    try:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as presence:
            assert one(presence, "select register_worker('w1') as held")["held"]
            [first] = claim(db, "w1", AT)
            assert queue_row(db, qid)["presence_claimed_at"] is not None
            assert claim(db, "w2", AT + timedelta(seconds=1)) == []  # w1 is alive: hands off
            w1_pid = presence.info.backend_pid
        # Closing our end does not end the server's backend at once: wait for its lock to go.
        wait_until_locks_gone(database_url, w1_pid)
        # w1's session is gone (its lock with it): w2 takes the row long before the lease ends.
        [again] = claim(db, "w2", AT + timedelta(seconds=1))
        assert again["queue_id"] == qid
        assert first["locked_until"] > AT + timedelta(seconds=1)
        assert "worker w1 is gone" in queue_row(db, qid)["last_error"]
        # The re-send carries the ring window the first claim fixed.
        assert again["ring_expires_at"] == first["ring_expires_at"] == AT + timedelta(seconds=45)
    finally:
        db.execute("rollback")
        db.execute("delete from households where id = %s", [fam.household])
        db.execute("delete from auth.users where id = %s", [fam.member])
        db.execute("commit")


def wait_until_locks_gone(database_url: str, pid: int) -> None:
    """Wait until the backend `pid` holds no lock (its session has ended), as pg_locks shows.

    A client's close only asks the server to end the backend; until it has, the backend's
    session-level advisory locks are still held. Fails loudly if they outlive a generous bound.
    """
    with psycopg.connect(database_url, autocommit=True) as watcher:

        def gone() -> bool:
            row = watcher.execute("select count(*) from pg_locks where pid = %s", [pid]).fetchone()
            return row is not None and row[0] == 0

        wait_for(f"backend {pid}'s locks to be released", gone, timeout=60)


def test_rows_claimed_without_a_presence_lock_keep_their_lease(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "script", AT)  # no register_worker: nothing to watch, the lease is the backstop
    assert queue_row(db, qid)["presence_claimed_at"] is None
    assert claim(db, "w2", AT + timedelta(seconds=29)) == []
    assert [r["queue_id"] for r in claim(db, "w2", AT + timedelta(seconds=31))] == [qid]


def test_a_second_session_cannot_take_a_held_owner(db: Conn, database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as first,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as second,
    ):
        assert one(first, "select register_worker('twin') as held")["held"]
        assert one(first, "select register_worker('twin') as held")["held"]  # idempotent
        assert not one(second, "select register_worker('twin') as held")["held"]


def test_a_provider_answer_clears_the_ring_window_a_lost_answer_keeps_it(db: Conn) -> None:
    _fam, qid = queued_call(db)
    [row] = claim(db, "w1", AT)
    assert row["ring_expires_at"] == AT + timedelta(seconds=45)
    # A 503: the phone cannot have rung; the next attempt gets a whole window.
    record(db, "w1", AT, result(qid, "retry", status=503, retry_after_s=5))
    assert queue_row(db, qid)["ring_expires_at"] is None
    [row] = claim(db, "w1", AT + timedelta(seconds=5))
    assert row["ring_expires_at"] == AT + timedelta(seconds=50)
    # A dropped connection (no answer): the phone may be ringing; the window stays.
    record(db, "w1", AT + timedelta(seconds=5), result(qid, "retry", status=0, retry_after_s=1))
    assert queue_row(db, qid)["ring_expires_at"] == AT + timedelta(seconds=50)
    [row] = claim(db, "w1", AT + timedelta(seconds=6))
    assert row["ring_expires_at"] == AT + timedelta(seconds=50)
    # Delivered: the session rings from the start of that window, as the phone does.
    record(db, "w1", AT + timedelta(seconds=7), result(qid, "delivered", message_id="m"))
    session = session_of(db, qid)
    assert (session["status"], session["ringing_at"]) == ("ringing", AT + timedelta(seconds=5))


def test_a_row_whose_fixed_ring_window_is_over_is_expired_not_sent(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    record(db, "w1", AT, result(qid, "retry", status=0, retry_after_s=50))
    assert claim(db, "w1", AT + timedelta(seconds=50)) == []
    stored = queue_row(db, qid)
    assert stored["status"] == "expired"
    assert "ring window" in stored["last_error"]
    assert session_of(db, qid)["status"] == "expired"


def test_next_work_at_names_the_earliest_ring_end_and_live_peers(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    record(db, "w1", AT, result(qid, "delivered", message_id="m"))
    work = one(db, "select * from next_work_at(%s, 'w1')", [AT])
    assert work["ring_ends_at"] == AT + timedelta(seconds=45)
    assert work["peer_leases"] is False


# -- exact boundaries and row locking (issue 17, items 3 and 8) ------------------------------


def test_a_row_is_claimed_at_the_very_instant_of_its_deadline(db: Conn) -> None:
    _fam, qid = queued_call(db)
    deadline = queue_row(db, qid)["deadline_at"]
    assert deadline == AT + timedelta(minutes=2)
    [row] = claim(db, "w1", deadline)
    assert row["queue_id"] == qid


def test_phase2_leaves_a_row_whose_deadline_is_now(db: Conn) -> None:
    fam, qid = queued_call(db)
    phase2(db, AT + timedelta(minutes=2))
    assert queue_row(db, qid)["status"] == "due"
    assert session_of(db, qid)["status"] == "queued"
    assert alerts(db, fam.household) == []


def test_a_result_is_recorded_at_the_last_instant_of_the_lease(db: Conn) -> None:
    _fam, qid = queued_call(db)
    [row] = claim(db, "w1", AT)
    assert row["locked_until"] == AT + LEASE
    assert record(db, "w1", AT + LEASE, result(qid, "delivered")) == {qid: "sent"}


def test_a_lease_is_not_taken_back_at_its_last_instant(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT)
    assert claim(db, "w2", AT + LEASE) == []
    stored = queue_row(db, qid)
    assert (stored["status"], stored["locked_by"], stored["last_error"]) == ("claimed", "w1", None)


def test_a_retry_landing_exactly_on_the_deadline_is_kept(db: Conn) -> None:
    _fam, qid = queued_call(db)
    claim(db, "w1", AT + timedelta(seconds=10))
    got = record(
        db, "w1", AT + timedelta(seconds=10), result(qid, "retry", status=503, retry_after_s=110)
    )
    assert got == {qid: "retry"}
    stored = queue_row(db, qid)
    assert (stored["status"], stored["next_attempt_at"]) == ("due", stored["deadline_at"])
    assert session_of(db, qid)["status"] == "queued"


def test_a_claim_skips_rows_another_worker_holds_instead_of_waiting(
    worker_database: str, wdb: Conn
) -> None:
    # Committed rows and two sessions: worker A claims one row and keeps its transaction
    # open; worker B, in the same moment, must take the other row at once, not wait for A.
    # Without SKIP LOCKED, B blocks on A's row and the lock_timeout turns that into an error.
    first, _ = queued_call(wdb)
    second, _ = queued_call(wdb)
    with (
        psycopg.connect(worker_database, row_factory=dict_row) as a,
        psycopg.connect(worker_database, row_factory=dict_row) as b,
    ):
        [taken_by_a] = claim(a, "worker-a", AT, limit=1)  # a's transaction stays open
        b.execute("set lock_timeout = '2s'")
        taken_by_b = claim(b, "worker-b", AT)
        assert [r["queue_id"] for r in taken_by_b] != [taken_by_a["queue_id"]]
        assert len(taken_by_b) == 1
        assert {taken_by_a["household_id"], taken_by_b[0]["household_id"]} == {
            first.household,
            second.household,
        }
        a.commit()
        b.commit()
