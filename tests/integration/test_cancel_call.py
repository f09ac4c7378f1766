"""A family member cancels a call (issue 11, item 7): `cancel_call(session_id)`, checked by
RLS. A queued or due call is withdrawn and never sent, also when a worker has claimed it; a
ringing call (or a claimed one whose push may be on its way) is cancelled and its device gets a
cancel notice for the worker to send. Attackers: other households, outsiders, anon, guesses."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.support.db import Conn, acting_as, one
from tests.support.world import World, build_world


@pytest.fixture
def world(db: Conn) -> World:
    return build_world(db)


def cancel_for_real(db: Conn, user: uuid.UUID, session: uuid.UUID) -> dict[str, Any]:
    """cancel_call as the member, kept (not rolled back) within the test transaction."""
    db.execute("set local role authenticated")
    db.execute(
        "select set_config('request.jwt.claims', %s, true)",
        [f'{{"role": "authenticated", "sub": "{user}"}}'],
    )
    try:
        row = one(db, "select cancel_call(%s) as result", [session])
    finally:
        db.execute("reset role")
    result: dict[str, Any] = row["result"]  # type: ignore[assignment]
    return result


def session_status(db: Conn, session: uuid.UUID) -> Any:
    return one(db, "select status, failure_reason from call_sessions where id = %s", [session])


def queue_status(db: Conn, queue_row: uuid.UUID) -> Any:
    return one(db, "select status, locked_by, last_error from notification_queue where id = %s",
               [queue_row])  # fmt: skip


def notices(db: Conn, session: uuid.UUID) -> list[dict[str, Any]]:
    return db.execute(
        "select * from private.cancel_notices where call_session_id = %s", [session]
    ).fetchall()


def make_ready(db: Conn, world: World) -> None:
    """World A's queue row due now (world.py queues it a moment ahead)."""
    db.execute(
        "update notification_queue set send_at = now() - interval '1 second',"
        " deadline_at = now() + interval '2 minutes' where id = %s",
        [world.a.queue_row],
    )


def test_a_member_cancels_a_queued_call_and_it_is_never_sent(db: Conn, world: World) -> None:
    make_ready(db, world)
    result = cancel_for_real(db, world.a.members["member_a2"], world.a.session)
    assert result["status"] == "cancelled"
    assert result["changed"] is True
    assert result["previous_status"] == "queued"
    assert result["cancel_push"] is False  # nothing rang, nothing to silence
    assert session_status(db, world.a.session)["status"] == "cancelled"
    assert "cancelled by a family member" in session_status(db, world.a.session)["failure_reason"]
    assert queue_status(db, world.a.queue_row)["status"] == "cancelled"
    assert notices(db, world.a.session) == []
    # No worker claims it, and phase 2 leaves it be.
    db.execute("set local role service_role")
    claimed = db.execute("select queue_id from claim_due_calls('w1', 10)").fetchall()
    assert world.a.queue_row not in [r["queue_id"] for r in claimed]
    db.execute("select release_due_calls(now() + interval '10 minutes')")
    db.execute("reset role")
    assert queue_status(db, world.a.queue_row)["status"] == "cancelled"
    assert session_status(db, world.a.session)["status"] == "cancelled"


def test_a_claimed_call_is_withdrawn_the_late_result_changes_nothing_and_a_notice_goes(
    db: Conn, world: World
) -> None:
    make_ready(db, world)
    db.execute("set local role service_role")
    claimed = db.execute("select * from claim_due_calls('w1', 10)").fetchall()
    db.execute("reset role")
    claimed = [r for r in claimed if r["queue_id"] == world.a.queue_row]
    assert len(claimed) == 1

    result = cancel_for_real(db, world.a.members["admin_a"], world.a.session)
    assert (result["previous_status"], result["cancel_push"]) == ("queued", True)
    row = queue_status(db, world.a.queue_row)
    assert (row["status"], row["locked_by"]) == ("cancelled", None)
    assert "claimed by w1" in row["last_error"]

    # The worker's push went out anyway; its result is refused (compare-and-set on the lease).
    db.execute("set local role service_role")
    recorded = db.execute(
        "select * from record_push_results('w1', %s)",
        [
            Jsonb(
                [
                    {
                        "queue_id": str(world.a.queue_row),
                        "outcome": "delivered",
                        "provider": "apns",
                        "message_id": "m1",
                    }
                ]
            )
        ],
    ).fetchall()
    db.execute("reset role")
    assert [r["result"] for r in recorded] == ["lost_lease"]
    assert session_status(db, world.a.session)["status"] == "cancelled"
    [notice] = notices(db, world.a.session)
    assert (notice["status"], notice["provider"], notice["platform"]) == ("queued", "apns", "ios")
    device = one(db, "select apns_token from device_pairs where id = %s", [world.a.device])
    assert notice["push_token"] == device["apns_token"]  # the regular token, never the VoIP one
    # Not before the call's own push could have gone.
    claimed_send_at = claimed[0]["send_at"]
    assert (notice["send_at"] - claimed_send_at).total_seconds() >= 2


def test_a_ringing_call_is_cancelled_and_its_phone_is_told(db: Conn, world: World) -> None:
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = now() where id = %s",
        [world.a.session],
    )
    db.execute("update notification_queue set status = 'sent' where id = %s", [world.a.queue_row])
    result = cancel_for_real(db, world.a.members["member_a"], world.a.session)
    assert (result["previous_status"], result["status"], result["cancel_push"]) == (
        "ringing",
        "cancelled",
        True,
    )
    [notice] = notices(db, world.a.session)
    assert notice["device_id"] == world.a.device
    assert notice["deadline_at"] > notice["send_at"]
    # The phone's next report gets 410: the app ends the call.
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute(
            "select record_call_event(%s, %s, 'accepted', now())", [world.a.device, world.a.session]
        )
    assert caught.value.sqlstate == "CP410"
    # Phase 2 does not turn it into a missed call (no retry, no missed_calls alert).
    db.execute("select release_due_calls(now() + interval '10 minutes')")
    assert session_status(db, world.a.session)["status"] == "cancelled"
    assert (
        one(db, "select count(*) as n from alerts where call_session_id = %s", [world.a.session])[
            "n"
        ]
        == 0
    )


def test_an_android_phone_is_told_through_fcm(db: Conn, world: World) -> None:
    db.execute(
        "update device_pairs set platform = 'android', voip_token = null, apns_token = null"
        " where id = %s",
        [world.a.device],
    )
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = now() where id = %s",
        [world.a.session],
    )
    cancel_for_real(db, world.a.members["member_a"], world.a.session)
    [notice] = notices(db, world.a.session)
    token = one(db, "select fcm_token from device_pairs where id = %s", [world.a.device])
    assert (notice["provider"], notice["push_token"]) == ("fcm", token["fcm_token"])


def test_cancelling_twice_is_a_harmless_repeat(db: Conn, world: World) -> None:
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = now() where id = %s",
        [world.a.session],
    )
    cancel_for_real(db, world.a.members["member_a"], world.a.session)
    again = cancel_for_real(db, world.a.members["member_a2"], world.a.session)
    assert (again["status"], again["changed"]) == ("cancelled", False)
    assert len(notices(db, world.a.session)) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("accepted", "has been answered"),
        ("in_progress", "has been answered"),
        ("completed", "is already over"),
        ("missed", "is already over"),
        ("declined", "is already over"),
        ("expired", "is already over"),
    ],
)
def test_an_answered_or_finished_call_is_not_cancelled(
    db: Conn, world: World, status: str, reason: str
) -> None:
    db.execute(
        "update call_sessions set status = %s, ringing_at = now(), answered_at = now()"
        " where id = %s",
        [status, world.a.session],
    )
    with (
        acting_as(db, "authenticated", world.a.members["member_a"]),
        pytest.raises(errors.RaiseException, match=f"call session is {status}: the call {reason}"),
    ):
        db.execute("select cancel_call(%s)", [world.a.session])
    assert session_status(db, world.a.session)["status"] == status


def test_other_households_outsiders_and_guesses_get_not_found_and_change_nothing(
    db: Conn, world: World
) -> None:
    for user in (world.b.members["admin_b"], world.outsider):
        for target in (world.a.session, uuid.uuid4()):
            with (
                acting_as(db, "authenticated", user),
                pytest.raises(errors.NoDataFound, match=f"call session {target} not found"),
            ):
                db.execute("select cancel_call(%s)", [target])
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select cancel_call(%s)", [world.a.session])
    with acting_as(db, "authenticated", world.a.members["member_a"]):
        with pytest.raises(errors.InsufficientPrivilege), db.transaction():
            db.execute("select * from private.cancel_notices")
        for fn in ("claim_cancel_notices('w', 10)", "record_cancel_results('w', '[]')"):
            with pytest.raises(errors.InsufficientPrivilege), db.transaction():
                db.execute(f"select * from {fn}")  # noqa: S608 - fixed text
    assert session_status(db, world.a.session)["status"] == "queued"
    assert queue_status(db, world.a.queue_row)["status"] == "queued"


def test_the_worker_claims_notices_and_records_what_happened(db: Conn, world: World) -> None:
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = now() where id = %s",
        [world.a.session],
    )
    cancel_for_real(db, world.a.members["member_a"], world.a.session)
    db.execute("set local role service_role")
    [claimed] = db.execute("select * from claim_cancel_notices('w1', 10)").fetchall()
    assert claimed["call_session_id"] == world.a.session
    assert db.execute("select * from claim_cancel_notices('w2', 10)").fetchall() == []
    # Another worker's result is refused; a retry goes back to the queue; delivered is final.
    refused = db.execute(
        "select * from record_cancel_results('w2', %s)",
        [Jsonb([{"notice_id": str(claimed["notice_id"]), "outcome": "delivered"}])],
    ).fetchall()
    assert [r["result"] for r in refused] == ["lost_lease"]
    retry = db.execute(
        "select * from record_cancel_results('w1', %s)",
        [
            Jsonb(
                [
                    {
                        "notice_id": str(claimed["notice_id"]),
                        "outcome": "retry",
                        "retry_after_s": 0,
                        "reason": "ServiceUnavailable",
                    }
                ]
            )
        ],
    ).fetchall()
    assert [r["result"] for r in retry] == ["retry"]
    [again] = db.execute("select * from claim_cancel_notices('w1', 10)").fetchall()
    sent = db.execute(
        "select * from record_cancel_results('w1', %s)",
        [
            Jsonb(
                [
                    {
                        "notice_id": str(again["notice_id"]),
                        "outcome": "delivered",
                        "message_id": "m-1",
                    }
                ]
            )
        ],
    ).fetchall()
    db.execute("reset role")
    assert [r["result"] for r in sent] == ["sent"]
    [notice] = notices(db, world.a.session)
    assert (notice["status"], notice["provider_message_id"], notice["attempts"]) == (
        "sent",
        "m-1",
        2,
    )


def test_a_notice_past_the_ring_window_is_not_sent(db: Conn, world: World) -> None:
    db.execute(
        "update call_sessions set status = 'ringing', ringing_at = now() where id = %s",
        [world.a.session],
    )
    cancel_for_real(db, world.a.members["member_a"], world.a.session)
    db.execute("set local role service_role")
    late = db.execute(
        "select * from claim_cancel_notices('w1', 10, p_now => now() + interval '10 minutes')"
    ).fetchall()
    db.execute("reset role")
    assert late == []
    assert notices(db, world.a.session)[0]["status"] == "expired"


def test_bad_worker_results_are_refused_naming_the_field(db: Conn, world: World) -> None:
    db.execute("set local role service_role")
    for results, field in (
        ([{"outcome": "delivered"}], "notice_id"),
        ([{"notice_id": "x", "outcome": "delivered"}], "notice_id"),
        ([{"notice_id": str(uuid.uuid4()), "outcome": "maybe"}], "outcome"),
    ):
        with pytest.raises(errors.InvalidParameterValue, match=field), db.transaction():
            db.execute("select * from record_cancel_results('w1', %s)", [Jsonb(results)])
    db.execute("reset role")
