"""Telling the family (issue 21), the SQL side: the outbox written with the alert, the
escalation chain, acknowledgement by dashboard, link and SMS reply, verification codes,
delivery results, and the attacker's side. Real Postgres; time moves by explicit `p_now`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row

Conn = psycopg.Connection[dict[str, Any]]

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"
SID = "SM" + "0" * 31


def rows(conn: Conn, query: LiteralString, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """All rows of a query."""
    return conn.execute(query, params).fetchall()


def one(conn: Conn, query: LiteralString, params: list[Any] | None = None) -> dict[str, Any]:
    """The single row of a query."""
    found = rows(conn, query, params)
    assert len(found) == 1, found
    return found[0]


@contextmanager
def acting_as(conn: Conn, role: str, user_id: object | None = None) -> Iterator[Conn]:
    """As PostgREST runs a request (role plus JWT claims), in a savepoint rolled back after."""
    claims: dict[str, object] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
        yield conn


@dataclass
class Family:
    household: uuid.UUID
    relative: uuid.UUID
    alice: uuid.UUID  # admin: email, sms, webpush
    bob: uuid.UUID  # member: email
    carol: uuid.UUID  # member: no method
    methods: dict[str, uuid.UUID]  # "alice_email", "alice_sms", "alice_webpush", "bob_email"
    now: datetime


def add_user(conn: Conn) -> uuid.UUID:
    """A user of the auth stand-in."""
    user: uuid.UUID = one(
        conn,
        "insert into auth.users (email) values (%s) returning id",
        [f"{uuid.uuid4().hex}@example.test"],
    )["id"]
    return user


def add_method(
    conn: Conn, household: uuid.UUID, user: uuid.UUID, channel: str, address: str
) -> uuid.UUID:
    """A verified contact method, written as the owner (tests of verification use the RPCs)."""
    keys = (P256DH, AUTH) if channel == "webpush" else (None, None)
    return one(  # type: ignore[no-any-return]
        conn,
        """insert into contact_methods (household_id, user_id, channel, address, push_p256dh,
                                        push_auth, verified_at)
           values (%s, %s, %s, %s, %s, %s, now()) returning id""",
        [household, user, channel, address, *keys],
    )["id"]


def make_family(conn: Conn, name: str = "Smiths") -> Family:
    """A household with an admin (three methods), two members (one with email), and Mum."""
    household = one(conn, "insert into households (name) values (%s) returning id", [name])["id"]
    alice, bob, carol = add_user(conn), add_user(conn), add_user(conn)
    for user, role in ((alice, "admin"), (bob, "member"), (carol, "member")):
        conn.execute(
            "insert into household_members (household_id, user_id, role) values (%s, %s, %s)",
            [household, user, role],
        )
    relative = one(
        conn,
        "insert into relatives (household_id, display_name, timezone) values (%s, 'Mum', 'Europe/London') returning id",
        [household],
    )["id"]
    tag = uuid.uuid4().hex[:8]
    methods = {
        "alice_email": add_method(conn, household, alice, "email", f"alice-{tag}@example.test"),
        "alice_sms": add_method(
            conn, household, alice, "sms", "+4477009" + str(uuid.uuid4().int)[:5]
        ),
        "alice_webpush": add_method(
            conn, household, alice, "webpush", f"https://push.example.test/{tag}"
        ),
        "bob_email": add_method(conn, household, bob, "email", f"bob-{tag}@example.test"),
    }
    now = one(conn, "select now() as t")["t"]
    return Family(household, relative, alice, bob, carol, methods, now)


def raise_alert(
    conn: Conn,
    fam: Family,
    kind: str = "missed_calls",
    message: str = "Mum did not answer 2 calls at Tue 01 Dec 09:30",
) -> uuid.UUID:
    """An alert as phase 2 raises it."""
    return one(  # type: ignore[no-any-return]
        conn,
        """insert into alerts (household_id, relative_id, kind, severity, message)
           values (%s, %s, %s, 'critical', %s) returning id""",
        [fam.household, fam.relative, kind, message],
    )["id"]


def outbox(conn: Conn, alert: uuid.UUID) -> list[dict[str, Any]]:
    """The alert's outbox rows, by step and channel."""
    return rows(
        conn,
        """select o.*, m.user_id as owner from private.outbox o
           left join contact_methods m on m.id = o.method_id
           where o.alert_id = %s order by o.step, o.kind, o.channel""",
        [alert],
    )


def claim(conn: Conn, now: datetime, worker: str = "w1", limit: int = 100) -> list[dict[str, Any]]:
    """claim_outbox at an explicit time."""
    return rows(
        conn, "select * from claim_outbox(%s, %s, interval '30 seconds', %s)", [worker, limit, now]
    )


def record(
    conn: Conn, now: datetime, results: list[dict[str, Any]], worker: str = "w1"
) -> dict[str, str]:
    """record_outbox_results; returns outbox id -> result."""
    found = rows(
        conn,
        "select * from record_outbox_results(%s, %s, %s)",
        [worker, json.dumps(results, default=str), now],
    )
    return {str(r["outbox_id"]): r["result"] for r in found}


def escalate(conn: Conn, now: datetime) -> int:
    """run_alert_escalations at an explicit time."""
    return one(conn, "select run_alert_escalations(%s) as n", [now])["n"]  # type: ignore[no-any-return]


@pytest.fixture
def fam(db: Conn) -> Family:
    return make_family(db)


# Raising ------------------------------------------------------------------------------------


def test_alert_tells_step_one_in_the_raising_transaction_by_every_verified_method(
    db: Conn, fam: Family
) -> None:
    alert = raise_alert(db, fam)
    written = outbox(db, alert)
    # Nothing set: step 1 is the admins, by each of alice's verified methods, due at once.
    assert [(r["step"], r["channel"], r["owner"]) for r in written] == [
        (1, "email", fam.alice),
        (1, "sms", fam.alice),
        (1, "webpush", fam.alice),
    ]
    assert all(r["status"] == "queued" and r["send_at"] == fam.now for r in written)
    esc = one(db, "select * from private.alert_escalations where alert_id = %s", [alert])
    assert esc["next_step"] == 2
    assert esc["next_step_at"] == fam.now + timedelta(minutes=10)
    assert esc["chain"] == [[str(fam.alice)], [str(fam.bob), str(fam.carol)]] or esc["chain"] == [
        [str(fam.alice)],
        sorted([str(fam.bob), str(fam.carol)]),
    ]


def test_claim_gives_destination_message_and_links(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    claimed = {r["channel"]: r for r in claim(db, fam.now)}
    assert set(claimed) == {"email", "sms", "webpush"}
    assert claimed["webpush"]["destination"] == {
        "endpoint": one(
            db, "select address from contact_methods where id = %s", [fam.methods["alice_webpush"]]
        )["address"],
        "keys": {"p256dh": P256DH, "auth": AUTH},
    }
    assert claimed["sms"]["destination"]["phone"].startswith("+44")
    assert "@example.test" in claimed["email"]["destination"]["email"]
    message = claimed["email"]["message"]
    assert message["relative_name"] == "Mum"
    assert message["alert_kind"] == "missed_calls"
    assert message["what"] == "Mum did not answer 2 calls at Tue 01 Dec 09:30"
    assert message["member_timezone"] == "Europe/London"
    assert message["critical"] is True
    assert message["ack_token"].startswith("a.")
    assert message["call_token"].startswith("c.")
    assert claimed["email"]["attempts"] == 1
    assert claimed["email"]["alert_id"] == alert
    # Claimed rows are not claimed again by another worker.
    assert claim(db, fam.now, worker="w2") == []


def test_member_zone_sets_the_time_in_the_message(db: Conn, fam: Family) -> None:
    db.execute(
        "insert into member_alert_settings (household_id, user_id, timezone) values (%s, %s, 'America/New_York')",
        [fam.household, fam.alice],
    )
    alert = raise_alert(db, fam)
    message = outbox(db, alert)[0]["payload"]
    assert message["member_timezone"] == "America/New_York"
    local = one(
        db,
        "select to_char(%s::timestamptz at time zone 'America/New_York', 'Dy DD Mon YYYY HH24:MI') as t",
        [fam.now],
    )["t"]
    assert message["happened_at_local"] == local
    assert local in message["text"]


def test_unverified_and_disabled_methods_are_not_told(db: Conn, fam: Family) -> None:
    db.execute(
        "update contact_methods set verified_at = null where id = %s", [fam.methods["alice_sms"]]
    )
    db.execute(
        "update contact_methods set disabled_at = now(), disabled_reason = 'gone' where id = %s",
        [fam.methods["alice_webpush"]],
    )
    alert = raise_alert(db, fam)
    assert [r["channel"] for r in outbox(db, alert)] == ["email"]


def test_kinds_per_method(db: Conn, fam: Family) -> None:
    db.execute(
        "update contact_methods set kinds = '{concerning_content}' where id = %s",
        [fam.methods["alice_email"]],
    )
    alert = raise_alert(db, fam)
    assert [r["channel"] for r in outbox(db, alert)] == ["sms", "webpush"]


def test_a_step_reaching_nobody_passes_to_the_next_at_once(db: Conn, fam: Family) -> None:
    db.execute("delete from contact_methods where user_id = %s", [fam.alice])
    alert = raise_alert(db, fam)
    assert [(r["step"], r["owner"]) for r in outbox(db, alert)] == [(2, fam.bob)]


def test_outbox_config_alerts_are_not_messaged(db: Conn, fam: Family) -> None:
    alert = one(
        db,
        """insert into alerts (household_id, kind, severity, message, details)
           values (%s, 'provider_config', 'critical', 'broken', '{"outbox_config": true}') returning id""",
        [fam.household],
    )["id"]
    assert outbox(db, alert) == []


# Escalation ---------------------------------------------------------------------------------


def test_escalation_waits_then_tells_the_next_step_once(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    assert escalate(db, fam.now + timedelta(minutes=9, seconds=59)) == 0
    assert escalate(db, fam.now + timedelta(minutes=10)) == 1
    steps = [(r["step"], r["owner"]) for r in outbox(db, alert)]
    assert steps[-1] == (2, fam.bob)
    assert len(steps) == 4
    assert outbox(db, alert)[-1]["payload"]["subject"].startswith("Still unacknowledged: ")
    # The chain (2 steps, no repeat) is done: nothing more, ever.
    assert escalate(db, fam.now + timedelta(hours=5)) == 0
    assert (
        one(db, "select next_step_at from private.alert_escalations where alert_id = %s", [alert])[
            "next_step_at"
        ]
        is None
    )


def test_repeats_start_the_chain_again(db: Conn, fam: Family) -> None:
    db.execute(
        "insert into escalation_policies (household_id, wait, repeats) values (%s, '2 minutes', 1)",
        [fam.household],
    )
    alert = raise_alert(db, fam)
    escalate(db, fam.now + timedelta(minutes=2))
    # Every step waits its own `wait` from the step before (not only step 1).
    assert escalate(db, fam.now + timedelta(minutes=3, seconds=59)) == 0
    escalate(db, fam.now + timedelta(minutes=4))
    escalate(db, fam.now + timedelta(minutes=6))
    assert escalate(db, fam.now + timedelta(minutes=30)) == 0
    assert [(r["step"], r["channel"]) for r in outbox(db, alert)] == [
        (1, "email"),
        (1, "sms"),
        (1, "webpush"),
        (2, "email"),
        (3, "email"),
        (3, "sms"),
        (3, "webpush"),
        (4, "email"),
    ]


def test_chain_is_frozen_when_the_alert_is_raised(db: Conn, fam: Family) -> None:
    db.execute(
        "insert into escalation_contacts (household_id, user_id, step) values (%s, %s, 1), (%s, %s, 2)",
        [fam.household, fam.bob, fam.household, fam.alice],
    )
    alert = raise_alert(db, fam)
    assert {r["owner"] for r in outbox(db, alert)} == {fam.bob}
    # Edits after the alert was raised do not change its chain.
    db.execute("delete from escalation_contacts where household_id = %s", [fam.household])
    db.execute(
        "insert into escalation_contacts (household_id, user_id, step) values (%s, %s, 1)",
        [fam.household, fam.bob],
    )
    escalate(db, fam.now + timedelta(minutes=10))
    assert {(r["step"], r["owner"]) for r in outbox(db, alert)} == {(1, fam.bob), (2, fam.alice)}


def test_kinds_that_do_not_escalate_tell_step_one_only(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam, kind="invalid_token", message="Mum's phone needs the app opened")
    assert escalate(db, fam.now + timedelta(hours=1)) == 0
    assert {r["step"] for r in outbox(db, alert)} == {1}


def test_nothing_is_told_twice(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    again = one(
        db,
        "select * from private.enqueue_alert_steps(%s, '{1}', %s)",
        [[alert], fam.now],
    )
    assert again["written"] == 0
    with pytest.raises(errors.UniqueViolation):
        db.execute(
            """insert into private.outbox (kind, household_id, alert_id, user_id, method_id, channel, step)
               values ('alert', %s, %s, %s, %s, 'email', 1)""",
            [fam.household, alert, fam.alice, fam.methods["alice_email"]],
        )


# Quiet hours ------------------------------------------------------------------------------


def quiet_now(db: Conn, fam: Family, user: uuid.UUID, hold_critical: bool = False) -> datetime:
    """Quiet hours for `user` that cover now (in UTC), ending 3 hours from now; returns the end."""
    end = one(db, "select date_trunc('minute', now() + interval '3 hours') as t")["t"]
    db.execute(
        """insert into member_alert_settings (household_id, user_id, timezone, quiet_start, quiet_end,
                                              quiet_hours_hold_critical)
           values (%s, %s, 'UTC', ((now() - interval '1 hour') at time zone 'UTC')::time,
                   (%s::timestamptz at time zone 'UTC')::time, %s)""",
        [fam.household, user, end, hold_critical],
    )
    return end  # type: ignore[no-any-return]


def test_quiet_hours_hold_ordinary_kinds_until_they_end(db: Conn, fam: Family) -> None:
    end = quiet_now(db, fam, fam.alice)
    alert = raise_alert(db, fam, kind="invalid_token")
    assert {r["send_at"] for r in outbox(db, alert)} == {end}
    assert claim(db, fam.now) == []
    assert len(claim(db, end)) == 3


def test_critical_kinds_pass_quiet_hours_unless_the_member_says_otherwise(
    db: Conn, fam: Family
) -> None:
    quiet_now(db, fam, fam.alice)
    end = quiet_now(db, fam, fam.bob, hold_critical=True)
    alert = raise_alert(db, fam)
    assert {r["send_at"] for r in outbox(db, alert)} == {fam.now}
    escalate(db, fam.now + timedelta(minutes=10))
    assert [r["send_at"] for r in outbox(db, alert) if r["owner"] == fam.bob] == [end]


def test_quiet_hours_wrapping_midnight(db: Conn) -> None:
    def after(at: str) -> Any:
        return one(
            db,
            "select private.after_quiet_hours(%s::timestamptz, 'Europe/London', '22:00', '07:00') as t",
            [at],
        )["t"]

    assert (
        after("2026-12-01 23:30+00")
        == one(db, "select '2026-12-02 07:00+00'::timestamptz as t")["t"]
    )
    assert (
        after("2026-12-02 03:00+00")
        == one(db, "select '2026-12-02 07:00+00'::timestamptz as t")["t"]
    )
    assert (
        after("2026-12-02 12:00+00")
        == one(db, "select '2026-12-02 12:00+00'::timestamptz as t")["t"]
    )
    # Summer: London is UTC+1, so 06:30 UTC is 07:30 local, outside.
    assert (
        after("2026-07-02 06:30+00")
        == one(db, "select '2026-07-02 06:30+00'::timestamptz as t")["t"]
    )


# Stopping -----------------------------------------------------------------------------------


def test_dashboard_acknowledgement_stops_the_chain_for_everyone(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    as_member(db, fam.carol)  # any member, even one not in the chain
    db.execute("select acknowledge_alert(%s)", [alert])
    db.execute("reset role")
    esc = one(db, "select * from private.alert_escalations where alert_id = %s", [alert])
    assert esc["stop_reason"] == "acknowledged"
    assert esc["next_step_at"] is None
    assert {r["status"] for r in outbox(db, alert)} == {"cancelled"}
    assert escalate(db, fam.now + timedelta(hours=1)) == 0
    assert claim(db, fam.now + timedelta(hours=1)) == []


def test_the_relative_answering_a_later_call_sends_the_all_clear(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    claimed = claim(db, fam.now)
    record(
        db,
        fam.now,
        [
            {"outbox_id": str(r["outbox_id"]), "outcome": "delivered", "status": 201}
            for r in claimed
            if r["channel"] != "sms"
        ],
    )
    session = one(
        db,
        """insert into call_sessions (household_id, relative_id, occurrence_at, origin, status)
           values (%s, %s, now(), 'call_now', 'accepted') returning id""",
        [fam.household, fam.relative],
    )["id"]
    db.execute("update call_sessions set status = 'in_progress' where id = %s", [session])
    db.execute("set constraints all immediate")  # as at commit (the trigger is deferred)
    acked = one(
        db, "select acknowledged_at, acknowledged_by, details from alerts where id = %s", [alert]
    )
    assert acked["acknowledged_at"] is not None
    assert acked["acknowledged_by"] is None
    assert (
        one(db, "select stop_reason from private.alert_escalations where alert_id = %s", [alert])[
            "stop_reason"
        ]
        == "answered"
    )
    # Told: email and webpush (sent) and sms (claimed: may have gone). All of them get the all clear.
    clear = [r for r in outbox(db, alert) if r["kind"] == "all_clear"]
    assert sorted(r["channel"] for r in clear) == ["email", "sms", "webpush"]
    assert clear[0]["payload"]["subject"] == "All clear: Mum answered a call"
    assert escalate(db, fam.now + timedelta(hours=1)) == 0


def test_answering_does_not_resolve_a_concern(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam, kind="concerning_content", message="Mum mentioned a fall")
    session = one(
        db,
        """insert into call_sessions (household_id, relative_id, occurrence_at, origin, status)
           values (%s, %s, now(), 'call_now', 'accepted') returning id""",
        [fam.household, fam.relative],
    )["id"]
    db.execute("update call_sessions set status = 'in_progress' where id = %s", [session])
    db.execute("set constraints all immediate")  # as at commit (the trigger is deferred)
    assert (
        one(db, "select acknowledged_at from alerts where id = %s", [alert])["acknowledged_at"]
        is None
    )


# Links ------------------------------------------------------------------------------------


def tokens(db: Conn, fam: Family) -> tuple[uuid.UUID, dict[str, Any]]:
    alert = raise_alert(db, fam)
    email = next(r for r in claim(db, fam.now) if r["channel"] == "email")
    return alert, email["message"]


def redeem(db: Conn, token: str, now: datetime | None = None) -> dict[str, Any]:
    """redeem_alert_link in a savepoint, so a refusal leaves the test's transaction usable."""
    with db.transaction():
        return one(db, "select redeem_alert_link(%s, coalesce(%s, now())) as r", [token, now])["r"]  # type: ignore[no-any-return]


def test_ack_link_acknowledges_as_the_member_it_went_to_once(db: Conn, fam: Family) -> None:
    alert, message = tokens(db, fam)
    answer = redeem(db, message["ack_token"])
    assert answer["result"] == "acknowledged"
    assert answer["alert_id"] == str(alert)
    assert (
        one(db, "select acknowledged_by from alerts where id = %s", [alert])["acknowledged_by"]
        == fam.alice
    )
    with pytest.raises(errors.InvalidAuthorizationSpecification, match="already used"):
        redeem(db, message["ack_token"])


@pytest.mark.parametrize("part", [1, 3])
def test_forged_link_is_refused(db: Conn, fam: Family, part: int) -> None:
    _, message = tokens(db, fam)
    pieces = message["ack_token"].split(".")
    pieces[part] = ("B" if pieces[part][0] != "B" else "C") + pieces[part][1:]
    with pytest.raises(errors.InvalidAuthorizationSpecification, match="forged"):
        redeem(db, ".".join(pieces))


def test_link_for_another_row_cannot_be_made_from_ours(db: Conn, fam: Family) -> None:
    _, message = tokens(db, fam)
    other = make_family(db, "Joneses")
    other_alert = raise_alert(db, other)
    other_row = outbox(db, other_alert)[0]["id"]
    pieces = message["ack_token"].split(".")
    pieces[1] = one(
        db, "select private.b64url(decode(replace(%s::text, '-', ''), 'hex')) as b", [other_row]
    )["b"]
    with pytest.raises(errors.InvalidAuthorizationSpecification, match="forged"):
        redeem(db, ".".join(pieces))
    assert (
        one(db, "select acknowledged_at from alerts where id = %s", [other_alert])[
            "acknowledged_at"
        ]
        is None
    )


def test_expired_and_malformed_links_are_refused(db: Conn, fam: Family) -> None:
    _, message = tokens(db, fam)
    with pytest.raises(errors.InvalidAuthorizationSpecification, match="expired"):
        redeem(db, message["ack_token"], fam.now + timedelta(days=8))
    for bad in (
        "",
        "a.b.c",
        "x.AAAAAAAAAAAAAAAAAAAAAA.1.AAAA",
        "a.!!!.1.x",
        "a." + "A" * 300 + ".1.x",
    ):
        with pytest.raises(errors.InvalidAuthorizationSpecification, match="malformed"):
            redeem(db, bad)
    # The link still works within its lifetime.
    assert redeem(db, message["ack_token"], fam.now + timedelta(days=6))["result"] == "acknowledged"


def test_call_link_rings_the_relative_and_a_refused_call_keeps_the_link(
    db: Conn, fam: Family
) -> None:
    _, message = tokens(db, fam)
    with pytest.raises(errors.RaiseException, match="cannot be called"):
        redeem(db, message["call_token"])
    db.execute(
        """insert into device_pairs (household_id, relative_id, status, platform, voip_token, secret_hash, paired_at)
           values (%s, %s, 'active', 'ios', %s, 'hash', now())""",
        [fam.household, fam.relative, uuid.uuid4().hex * 2],
    )
    answer = redeem(db, message["call_token"])
    assert answer["result"] == "call_requested"
    assert (
        one(db, "select origin from call_sessions where id = %s", [answer["call_session_id"]])[
            "origin"
        ]
        == "call_now"
    )
    with pytest.raises(errors.InvalidAuthorizationSpecification, match="already used"):
        redeem(db, message["call_token"])
    # The acknowledgement link of the same message is its own.
    assert redeem(db, message["ack_token"])["result"] == "acknowledged"


def test_links_work_without_login_only_through_the_service_role(db: Conn, fam: Family) -> None:
    _, message = tokens(db, fam)
    for role in ("anon", "authenticated"):
        with (
            acting_as(db, role, fam.alice if role == "authenticated" else None),
            pytest.raises(errors.InsufficientPrivilege),
        ):
            db.execute("select redeem_alert_link(%s)", [message["ack_token"]])
    with acting_as(db, "service_role"):
        assert redeem(db, message["ack_token"])["result"] == "acknowledged"


# Delivery results -------------------------------------------------------------------------


def test_results_sent_retry_and_lost_lease(db: Conn, fam: Family) -> None:
    raise_alert(db, fam)
    by = {r["channel"]: str(r["outbox_id"]) for r in claim(db, fam.now)}
    answers = record(
        db,
        fam.now + timedelta(seconds=1),
        [
            {
                "outbox_id": by["email"],
                "outcome": "delivered",
                "status": 250,
                "message_id": "<m1@callpanion>",
            },
            {
                "outbox_id": by["sms"],
                "outcome": "retry",
                "status": 429,
                "reason": "20429",
                "retry_after_s": 4,
            },
        ],
    )
    assert answers == {by["email"]: "sent", by["sms"]: "retry"}
    sms = one(db, "select * from private.outbox where id = %s", [by["sms"]])
    assert sms["status"] == "queued"
    assert sms["next_attempt_at"] == fam.now + timedelta(seconds=5)
    assert "sms 429 20429" in sms["last_error"]
    assert record(
        db, fam.now, [{"outbox_id": by["webpush"], "outcome": "delivered"}], worker="intruder"
    ) == {by["webpush"]: "lost_lease"}
    assert claim(db, fam.now + timedelta(seconds=4)) == []
    again = claim(db, fam.now + timedelta(seconds=5))
    assert [(str(r["outbox_id"]), r["attempts"]) for r in again] == [(by["sms"], 2)]


def test_retries_give_up_after_max_attempts(db: Conn, fam: Family) -> None:
    db.execute("update private.alert_settings set max_attempts = 2")
    raise_alert(db, fam)
    t = fam.now
    target = next(r for r in claim(db, t) if r["channel"] == "email")["outbox_id"]
    assert record(db, t, [{"outbox_id": str(target), "outcome": "retry", "status": 451}]) == {
        str(target): "retry"
    }
    t += timedelta(seconds=1)
    assert [r["outbox_id"] for r in claim(db, t)] == [target]
    assert record(db, t, [{"outbox_id": str(target), "outcome": "retry", "status": 451}]) == {
        str(target): "failed"
    }
    assert (
        "gave up after 2 attempts"
        in one(db, "select last_error from private.outbox where id = %s", [target])["last_error"]
    )


def test_dead_method_is_disabled_with_the_reason(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    push = next(r for r in claim(db, fam.now) if r["channel"] == "webpush")["outbox_id"]
    answer = record(
        db,
        fam.now,
        [
            {
                "outbox_id": str(push),
                "outcome": "method_dead",
                "status": 410,
                "detail": "push subscription has unsubscribed or expired",
            }
        ],
    )
    assert answer == {str(push): "disabled"}
    method = one(
        db,
        "select disabled_at, disabled_reason from contact_methods where id = %s",
        [fam.methods["alice_webpush"]],
    )
    assert method["disabled_at"] is not None
    assert "webpush 410" in method["disabled_reason"]
    # Later alerts are not written to it; the other methods still carry them.
    alert2 = raise_alert(db, fam, message="again")
    assert [r["channel"] for r in outbox(db, alert2)] == ["email", "sms"]
    assert one(db, "select status from private.outbox where id = %s", [push])["status"] == "failed"
    assert {r["status"] for r in outbox(db, alert)} == {"claimed", "failed"}


def test_config_fault_retries_and_tells_the_household_once_on_the_dashboard(
    db: Conn, fam: Family
) -> None:
    raise_alert(db, fam)
    first = claim(db, fam.now)
    record(
        db,
        fam.now,
        [
            {"outbox_id": str(r["outbox_id"]), "outcome": "config_fault", "status": 401}
            for r in first
        ],
    )
    faults = rows(
        db,
        "select * from alerts where household_id = %s and kind = 'provider_config'",
        [fam.household],
    )
    assert len(faults) == 3
    assert all(f["details"]["outbox_config"] for f in faults)
    row = one(db, "select * from private.outbox where id = %s", [first[0]["outbox_id"]])
    assert row["status"] == "queued"
    assert row["next_attempt_at"] == fam.now + timedelta(seconds=10)
    again = claim(db, fam.now + timedelta(seconds=10))
    record(
        db,
        fam.now + timedelta(seconds=10),
        [
            {"outbox_id": str(r["outbox_id"]), "outcome": "config_fault", "status": 401}
            for r in again
        ],
    )
    assert (
        len(
            rows(
                db,
                "select 1 from alerts where household_id = %s and kind = 'provider_config'",
                [fam.household],
            )
        )
        == 3
    )
    # Those alerts are not themselves messaged.
    assert (
        rows(
            db,
            "select 1 from private.outbox o join alerts a on a.id = o.alert_id where a.kind = 'provider_config'",
        )
        == []
    )


def test_bad_results_are_refused_naming_the_field(db: Conn) -> None:
    for bad, message in (
        ("{}", "a JSON array"),
        ('[{"outcome": "delivered"}]', r"p_results\[0\]: outbox_id is missing"),
        ('[{"outbox_id": "x", "outcome": "delivered"}]', "outbox_id is not a UUID"),
        (f'[{{"outbox_id": "{uuid.uuid4()}", "outcome": "lost"}}]', "outcome is not one of"),
        (
            f'[{{"outbox_id": "{uuid.uuid4()}", "outcome": "retry", "retry_after_s": "soon"}}]',
            "retry_after_s is not a number",
        ),
    ):
        with pytest.raises(errors.InvalidParameterValue, match=message), db.transaction():
            db.execute("select * from record_outbox_results('w1', %s)", [bad])


def test_expired_lease_and_release_return_rows(db: Conn, fam: Family) -> None:
    raise_alert(db, fam)
    first = claim(db, fam.now)
    assert len(first) == 3
    assert claim(db, fam.now + timedelta(seconds=29), worker="w2") == []
    taken = claim(db, fam.now + timedelta(seconds=31), worker="w2")
    assert len(taken) == 3
    assert {r["attempts"] for r in taken} == {2}
    released = rows(db, "select * from release_outbox_leases('w2')")
    assert len(released) == 3
    assert {r["attempts"] for r in claim(db, fam.now + timedelta(seconds=31), worker="w3")} == {2}
    renewed = rows(
        db,
        "select * from renew_outbox_leases('w3', %s, interval '60 seconds', %s)",
        [[r["outbox_id"] for r in taken], fam.now + timedelta(seconds=40)],
    )
    assert len(renewed) == 3


def test_an_orphaned_claim_returns_at_once_through_the_shared_reclaim(
    db: Conn, fam: Family
) -> None:
    raise_alert(db, fam)
    claim(db, fam.now, worker="gone-worker")
    # Claimed by a worker that held its presence lock, whose session has ended (no such lock).
    db.execute(
        "update private.outbox set presence_claimed_at = now() where locked_by = 'gone-worker'"
    )
    assert one(db, "select private.reclaim_orphaned_leases() as n")["n"] == 3
    row = rows(
        db, "select status, last_error from private.outbox where household_id = %s", [fam.household]
    )
    assert {r["status"] for r in row} == {"queued"}
    assert all("is gone" in r["last_error"] for r in row)
    # Phase 2 and claim_due_calls call the same function.
    claim(db, fam.now, worker="gone-again")
    db.execute(
        "update private.outbox set presence_claimed_at = now() where locked_by = 'gone-again'"
    )
    db.execute("select release_due_calls(%s)", [fam.now])
    assert {
        r["status"]
        for r in rows(
            db, "select status from private.outbox where household_id = %s", [fam.household]
        )
    } == {"queued"}


def test_an_outbox_claim_of_a_worker_still_present_is_not_reclaimed(
    db: Conn, fam: Family, database_url: str
) -> None:
    # The outbox half of the shared reclaim takes only the rows of a worker whose presence
    # lock is gone: a live worker's rows would be sent twice.
    raise_alert(db, fam)
    with psycopg.connect(database_url, autocommit=True) as presence:
        assert presence.execute("select register_worker('live-worker')").fetchone() == (True,)
        claim(db, fam.now, worker="live-worker")
        db.execute(
            "update private.outbox set presence_claimed_at = now() where locked_by = 'live-worker'"
        )
        assert one(db, "select private.reclaim_orphaned_leases() as n")["n"] == 0
        assert {
            r["status"]
            for r in rows(
                db, "select status from private.outbox where household_id = %s", [fam.household]
            )
        } == {"claimed"}


def test_next_outbox_at_and_depth(db: Conn, fam: Family) -> None:
    end = quiet_now(db, fam, fam.alice)
    raise_alert(db, fam, kind="invalid_token")
    assert one(db, "select next_outbox_at(%s) as t", [fam.now])["t"] == end
    alert = raise_alert(db, fam, message="critical one")
    assert one(db, "select next_outbox_at(%s) as t", [fam.now])["t"] == fam.now
    depth = {
        (r["kind"], r["channel"], r["status"]): r["rows"]
        for r in rows(db, "select * from outbox_depth()")
    }
    assert depth[("alert", "email", "queued")] >= 2
    assert alert


# SMS replies and status callbacks ---------------------------------------------------------


def sms_address(db: Conn, fam: Family) -> str:
    address: str = one(
        db, "select address from contact_methods where id = %s", [fam.methods["alice_sms"]]
    )["address"]
    return address


def sent_sms(db: Conn, fam: Family, sid: str = SID + "1") -> uuid.UUID:
    alert = raise_alert(db, fam)
    row = next(r for r in claim(db, fam.now) if r["channel"] == "sms")
    record(
        db,
        fam.now,
        [
            {
                "outbox_id": str(row["outbox_id"]),
                "outcome": "delivered",
                "status": 201,
                "message_id": sid,
            }
        ],
    )
    return alert


def reply(db: Conn, sender: str, body: str, sid: str) -> dict[str, Any]:
    """record_sms_reply in a savepoint."""
    with db.transaction():
        return one(db, "select record_sms_reply(%s, %s, %s) as r", [sender, body, sid])["r"]  # type: ignore[no-any-return]


def test_sms_reply_ok_acknowledges_once(db: Conn, fam: Family) -> None:
    alert = sent_sms(db, fam)
    answer = reply(db, sms_address(db, fam), " ok! ", "SM" + "a" * 32)
    assert answer["result"] == "acknowledged"
    assert answer["alert_id"] == str(alert)
    assert (
        one(db, "select acknowledged_by from alerts where id = %s", [alert])["acknowledged_by"]
        == fam.alice
    )
    assert (
        reply(db, sms_address(db, fam), " ok! ", "SM" + "a" * 32) == answer
    )  # the same webhook again
    assert (
        reply(db, sms_address(db, fam), "YES", "SM" + "b" * 32)["result"] == "already_acknowledged"
    )


def test_sms_reply_from_a_stranger_or_unclear(db: Conn, fam: Family) -> None:
    sent_sms(db, fam)
    assert reply(db, "+15005550006", "OK", "SM" + "c" * 32)["result"] == "unknown_sender"
    assert (
        reply(db, sms_address(db, fam), "who is this?", "SM" + "d" * 32)["result"]
        == "not_understood"
    )
    with pytest.raises(errors.InvalidParameterValue, match="p_message_sid"):
        reply(db, sms_address(db, fam), "OK", "nope")


def test_sms_stop_disables_the_number(db: Conn, fam: Family) -> None:
    sent_sms(db, fam)
    assert reply(db, sms_address(db, fam), "STOP", "SM" + "e" * 32)["result"] == "stopped"
    assert (
        one(
            db,
            "select disabled_reason from contact_methods where id = %s",
            [fam.methods["alice_sms"]],
        )["disabled_reason"]
        == "the recipient replied STOP"
    )


def test_sms_status_newest_wins_and_unreachable_numbers_are_disabled(db: Conn, fam: Family) -> None:
    sent_sms(db, fam)
    assert (
        one(db, "select record_sms_status(%s, 'delivered') as r", [SID + "1"])["r"]["result"]
        == "recorded"
    )
    one(db, "select record_sms_status(%s, 'sent') as r", [SID + "1"])
    assert (
        one(
            db,
            "select delivery_status from private.outbox where provider_message_id = %s",
            [SID + "1"],
        )["delivery_status"]
        == "delivered"
    )
    assert one(db, "select record_sms_status('SMnone', 'sent') as r")["r"]["result"] == "pending"
    one(db, "select record_sms_status(%s, 'undelivered', '30006') as r", [SID + "1"])
    assert (
        "landline"
        in one(
            db,
            "select disabled_reason from contact_methods where id = %s",
            [fam.methods["alice_sms"]],
        )["disabled_reason"]
    )
    with pytest.raises(errors.InvalidParameterValue, match="p_status"):
        db.execute("select record_sms_status(%s, 'read')", [SID + "1"])


# Verification -----------------------------------------------------------------------------


def as_member(db: Conn, user: uuid.UUID) -> None:
    """Stay `authenticated` as `user` for the rest of the test (the test's transaction rolls back)."""
    db.execute("set local role authenticated")
    db.execute(
        "select set_config('request.jwt.claims', %s, true)",
        [json.dumps({"role": "authenticated", "sub": str(user)})],
    )


def code_for(db: Conn, method: str) -> str:
    """The code the worker would send (read as the owner, as the worker's claim would)."""
    with db.transaction():
        db.execute("reset role")
        code = one(
            db,
            "select payload ->> 'code' as c from private.outbox where method_id = %s and kind = 'verification' order by step desc limit 1",
            [method],
        )["c"]
    return code  # type: ignore[no-any-return]


def test_verification_code_round_trip(db: Conn, fam: Family) -> None:
    as_member(db, fam.carol)
    added = one(
        db, "select add_contact_method(%s, 'sms', ' +44 7700 900555 ') as r", [fam.household]
    )["r"]
    assert added["verified"] is False
    assert added["verification_sent"] is True
    method = added["method_id"]
    db.execute("reset role")
    pending = one(db, "select * from private.outbox where method_id = %s", [method])
    assert pending["kind"] == "verification"
    assert pending["channel"] == "sms"
    code = pending["payload"]["code"]
    assert code in pending["payload"]["text"]
    stored = one(
        db, "select code_hash from private.contact_verifications where method_id = %s", [method]
    )["code_hash"]
    assert code not in stored
    # Not told until verified.
    alert = raise_alert(db, fam, message="to carol?")
    escalate(db, fam.now + timedelta(minutes=10))
    assert fam.carol not in {r["owner"] for r in outbox(db, alert)}
    as_member(db, fam.carol)
    wrong = "000000" if code != "000000" else "111111"
    assert one(db, "select confirm_contact_method(%s, %s) as r", [method, wrong])["r"] == {
        "method_id": method,
        "verified": False,
        "attempts_left": 4,
        "reason": "wrong code",
    }
    assert (
        one(db, "select confirm_contact_method(%s, %s) as r", [method, code])["r"]["verified"]
        is True
    )
    assert one(
        db, "select verified_at is not null as v from contact_methods where id = %s", [method]
    )["v"]


def test_the_code_leaves_the_outbox_once_sent(db: Conn, fam: Family) -> None:
    as_member(db, fam.carol)
    method = one(
        db, "select add_contact_method(%s, 'email', 'Carol@Example.TEST') as r", [fam.household]
    )["r"]["method_id"]
    db.execute("reset role")
    row = one(
        db, "select * from claim_outbox('w1', 10, interval '30 seconds', now(), '{verification}')"
    )
    assert row["destination"] == {"email": "carol@example.test"}
    assert len(row["message"]["code"]) == 6
    record(
        db, fam.now, [{"outbox_id": str(row["outbox_id"]), "outcome": "delivered", "status": 250}]
    )
    assert (
        one(
            db,
            "select payload ? 'code' as has from private.outbox where id = %s",
            [row["outbox_id"]],
        )["has"]
        is False
    )
    assert method


def test_too_many_wrong_codes_and_expiry_need_a_new_code(db: Conn, fam: Family) -> None:
    as_member(db, fam.carol)
    method = one(
        db, "select add_contact_method(%s, 'email', 'carol@example.test') as r", [fam.household]
    )["r"]["method_id"]
    code = code_for(db, method)
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        assert (
            one(db, "select confirm_contact_method(%s, %s) as r", [method, wrong])["r"][
                "attempts_left"
            ]
            == left
        )
    locked = one(db, "select confirm_contact_method(%s, %s) as r", [method, code])["r"]
    assert locked["verified"] is False
    assert "too many wrong codes" in locked["reason"]
    assert (
        one(db, "select resend_contact_verification(%s) as r", [method])["r"]["verification_sent"]
        is True
    )
    fresh = code_for(db, method)
    db.execute("reset role")
    db.execute(
        "update private.contact_verifications set expires_at = now() - interval '1 second' where method_id = %s and used_at is null",
        [method],
    )
    as_member(db, fam.carol)
    assert (
        "expired"
        in one(db, "select confirm_contact_method(%s, %s) as r", [method, fresh])["r"]["reason"]
    )


def test_codes_are_rate_limited(db: Conn, fam: Family) -> None:
    as_member(db, fam.carol)
    method = one(
        db, "select add_contact_method(%s, 'email', 'carol@example.test') as r", [fam.household]
    )["r"]["method_id"]
    for _ in range(4):
        db.execute("select resend_contact_verification(%s)", [method])
    with pytest.raises(errors.RaiseException, match="at most 5 an hour"):
        db.execute("select resend_contact_verification(%s)", [method])


def test_webpush_subscription_is_verified_at_once_and_bad_input_names_the_field(
    db: Conn, fam: Family
) -> None:
    as_member(db, fam.carol)
    sub = {
        "endpoint": "https://push.example.test/carol",
        "expirationTime": None,
        "keys": {"p256dh": P256DH, "auth": AUTH},
    }
    added = one(
        db,
        "select add_contact_method(%s, 'webpush', p_subscription => %s) as r",
        [fam.household, json.dumps(sub)],
    )["r"]
    assert added["verified"] is True
    assert added["verification_sent"] is False
    for args, message in (
        (["pigeon", "x", None], "invalid p_channel"),
        (["email", "not-an-address", None], "must be an email address"),
        (["sms", "07700900123", None], "E.164"),
        (
            [
                "webpush",
                None,
                json.dumps(
                    {"endpoint": "http://insecure.test/x", "keys": {"p256dh": P256DH, "auth": AUTH}}
                ),
            ],
            "https endpoint",
        ),
        (
            [
                "webpush",
                None,
                json.dumps(
                    {
                        "endpoint": "https://push.example.test/y",
                        "keys": {"p256dh": "short", "auth": AUTH},
                    }
                ),
            ],
            "push_p256dh",
        ),
        (
            ["webpush", None, json.dumps({"endpoint": "https://push.example.test/z"})],
            "invalid p_subscription",
        ),
        (
            ["webpush", None, json.dumps({"keys": {"p256dh": P256DH, "auth": AUTH}})],
            "invalid p_subscription",
        ),
    ):
        with (
            db.transaction(force_rollback=True),
            pytest.raises(errors.InvalidParameterValue, match=message),
        ):
            db.execute("select add_contact_method(%s, %s, %s, %s)", [fam.household, *args])


def test_member_leaving_takes_methods_and_pending_messages(db: Conn, fam: Family) -> None:
    db.execute(
        "insert into escalation_contacts (household_id, user_id, step) values (%s, %s, 1)",
        [fam.household, fam.bob],
    )
    alert = raise_alert(db, fam)
    assert outbox(db, alert)
    db.execute(
        "delete from household_members where household_id = %s and user_id = %s",
        [fam.household, fam.bob],
    )
    assert outbox(db, alert) == []
    assert rows(db, "select 1 from contact_methods where user_id = %s", [fam.bob]) == []


# The attacker's side ----------------------------------------------------------------------


def test_another_household_cannot_add_read_or_acknowledge(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    claim(db, fam.now)
    mallory_home = make_family(db, "Mallorys")
    mallory = mallory_home.alice
    with acting_as(db, "authenticated", mallory), pytest.raises(errors.NoDataFound):
        db.execute(
            "select add_contact_method(%s, 'email', 'spam-target@example.test')",
            [fam.household],
        )
    with acting_as(db, "authenticated", mallory):
        assert (
            rows(db, "select * from contact_methods where household_id = %s", [fam.household]) == []
        )
        assert rows(db, "select * from alert_deliveries(%s)", [alert]) == []
        assert (
            rows(db, "select * from alert_deliveries(p_household_id => %s)", [fam.household]) == []
        )
    with acting_as(db, "authenticated", mallory), pytest.raises(errors.NoDataFound):
        db.execute("select acknowledge_alert(%s)", [alert])
    for call in (
        "select confirm_contact_method(%s, '123456')",
        "select resend_contact_verification(%s)",
        "select remove_contact_method(%s)",
        "select set_contact_method_kinds(%s, '{missed_calls}')",
    ):
        with acting_as(db, "authenticated", mallory), pytest.raises(errors.NoDataFound):
            db.execute(call, [fam.methods["alice_email"]])
    assert (
        one(db, "select acknowledged_at from alerts where id = %s", [alert])["acknowledged_at"]
        is None
    )
    assert (
        one(
            db,
            "select count(*) as n from contact_methods where id = %s",
            [fam.methods["alice_email"]],
        )["n"]
        == 1
    )


def test_members_see_masked_deliveries_but_not_each_others_addresses(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    claimed = claim(db, fam.now)
    record(
        db,
        fam.now,
        [
            {"outbox_id": str(r["outbox_id"]), "outcome": "delivered", "status": 201}
            for r in claimed
        ],
    )
    address = one(
        db, "select address from contact_methods where id = %s", [fam.methods["alice_email"]]
    )["address"]
    with acting_as(db, "authenticated", fam.bob):
        assert rows(db, "select * from contact_methods where user_id = %s", [fam.alice]) == []
        seen = rows(db, "select * from alert_deliveries(%s)", [alert])
        assert {r["channel"] for r in seen} == {"email", "sms", "webpush"}
        assert {r["status"] for r in seen} == {"sent"}
        hints = {r["channel"]: r["destination_hint"] for r in seen}
        assert address not in json.dumps(hints)
        assert hints["email"].startswith("a•••@")
        assert hints["webpush"] == "browser (push.example.test)"
        assert "•••••" in hints["sms"]


def test_nobody_but_the_functions_reads_codes_keys_or_the_outbox(db: Conn, fam: Family) -> None:
    for role in ("anon", "authenticated", "service_role"):
        for table in (
            "private.contact_verifications",
            "private.alert_link_keys",
            "private.outbox",
            "private.alert_settings",
            "private.alert_link_uses",
        ):
            with (
                acting_as(db, role, fam.alice if role == "authenticated" else None),
                pytest.raises(errors.InsufficientPrivilege),
            ):
                db.execute(sql.SQL("select * from {}").format(sql.SQL(table)))


@pytest.mark.parametrize(
    "call",
    [
        "select * from claim_outbox('x')",
        "select * from record_outbox_results('x', '[]')",
        "select * from run_alert_escalations()",
        "select record_sms_reply('+447700900123', 'OK', 'SM00000000000000000000000000000000')",
        "select record_sms_status('SMx', 'sent')",
        "select * from outbox_depth()",
    ],
)
def test_worker_functions_are_the_service_roles(db: Conn, fam: Family, call: LiteralString) -> None:
    for role in ("anon", "authenticated"):
        with (
            acting_as(db, role, fam.alice if role == "authenticated" else None),
            pytest.raises(errors.InsufficientPrivilege),
        ):
            db.execute(call)
    with acting_as(db, "service_role"):
        db.execute(call)


def test_escalation_runs_from_pg_cron(db: Conn) -> None:
    job = one(
        db, "select schedule, command from cron.job where jobname = 'callpanion-alert-escalation'"
    )
    assert job == {"schedule": "* * * * *", "command": "select public.run_alert_escalations()"}


def test_the_worker_is_woken_at_commit(database_url: str) -> None:
    with (
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as listener,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as writer,
    ):
        listener.execute("listen callpanion_queue")
        fam = None
        try:
            with writer.transaction():
                fam = make_family(writer, "Woken")
                raise_alert(writer, fam)
            events = [json.loads(n.payload) for n in listener.notifies(timeout=10, stop_after=1)]
            assert events
            assert events[0]["event"] == "outbox"
            assert events[0]["count"] == 3
        finally:
            if fam is not None:
                writer.execute("delete from households where id = %s", [fam.household])
                writer.execute(
                    "delete from auth.users where id = any (%s)", [[fam.alice, fam.bob, fam.carol]]
                )


def test_a_row_claimed_when_the_alert_is_acknowledged_is_not_retried(db: Conn, fam: Family) -> None:
    alert = raise_alert(db, fam)
    first = claim(db, fam.now)
    db.execute(
        "update alerts set acknowledged_at = now(), acknowledged_by = %s where id = %s",
        [fam.alice, alert],
    )
    retry = [{"outbox_id": str(r["outbox_id"]), "outcome": "retry", "status": 503} for r in first]
    record(db, fam.now, retry)
    assert claim(db, fam.now + timedelta(seconds=1)) == []
    rows_now = outbox(db, alert)
    assert {r["status"] for r in rows_now} == {"cancelled"}
    assert all("acknowledged" in r["last_error"] for r in rows_now)


def test_a_claim_skips_rows_another_worker_holds_instead_of_waiting(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as setup:
        fam = make_family(setup, "Locked")  # committed: the other sessions must see it
        try:
            raise_alert(setup, fam)
            with (
                psycopg.connect(database_url, row_factory=dict_row) as holder,
                psycopg.connect(database_url, row_factory=dict_row) as other,
            ):
                held = rows(
                    holder,
                    "select id from private.outbox where household_id = %s for update",
                    [fam.household],
                )
                assert len(held) == 3
                # Without SKIP LOCKED this claim would wait for the holder: fail fast instead.
                other.execute("set lock_timeout = '5s'")
                assert claim(other, fam.now + timedelta(seconds=1), worker="w2") == []
                holder.rollback()
                assert len(claim(other, fam.now + timedelta(seconds=1), worker="w2")) == 3
                other.rollback()
        finally:
            setup.execute("delete from households where id = %s", [fam.household])
            setup.execute(
                "delete from auth.users where id = any (%s)", [[fam.alice, fam.bob, fam.carol]]
            )


def test_an_alert_closed_by_its_own_occurrences_conversation_sends_the_all_clear(
    db: Conn, fam: Family
) -> None:
    # As private.withdraw_after_conversation closes it: acknowledged by nobody, with a reason.
    alert = raise_alert(db, fam)
    sent = [
        {"outbox_id": str(r["outbox_id"]), "outcome": "delivered", "status": 201}
        for r in claim(db, fam.now)
    ]
    record(db, fam.now, sent)
    db.execute(
        """update alerts set acknowledged_at = now(),
                  details = details || '{"resolved": "a conversation for this occurrence took place"}'
           where id = %s""",
        [alert],
    )
    assert sorted(r["channel"] for r in outbox(db, alert) if r["kind"] == "all_clear") == [
        "email",
        "sms",
        "webpush",
    ]


def test_a_status_callback_that_overtakes_the_record_is_applied_with_it(
    db: Conn, fam: Family
) -> None:
    raise_alert(db, fam)
    row = next(r for r in claim(db, fam.now) if r["channel"] == "sms")
    sid = SID + "9"
    early = one(db, "select record_sms_status(%s, 'sent') as r", [sid])["r"]
    assert early == {"outbox_id": None, "result": "pending"}
    one(db, "select record_sms_status(%s, 'undelivered', '30006') as r", [sid])
    one(db, "select record_sms_status(%s, 'sending') as r", [sid])  # older: loses
    delivered = {"outbox_id": str(row["outbox_id"]), "outcome": "delivered", "status": 201}
    record(db, fam.now, [{**delivered, "message_id": sid}])
    stored = one(db, "select * from private.outbox where id = %s", [row["outbox_id"]])
    assert (stored["delivery_status"], stored["delivery_error"]) == ("undelivered", "30006")
    method = fam.methods["alice_sms"]
    reason = one(db, "select disabled_reason from contact_methods where id = %s", [method])
    assert "landline" in reason["disabled_reason"]
    assert rows(db, "select 1 from private.sms_status_pending where message_sid = %s", [sid]) == []


def test_one_member_cannot_send_codes_to_stranger_after_stranger(db: Conn, fam: Family) -> None:
    as_member(db, fam.carol)
    for n in range(10):
        db.execute(
            "select add_contact_method(%s, 'email', %s)", [fam.household, f"s{n}@example.test"]
        )
    with pytest.raises(errors.RaiseException, match="at most 10 an hour"):
        db.execute(
            "select add_contact_method(%s, 'email', 'one-more@example.test')", [fam.household]
        )


def test_a_burst_raised_in_one_statement_tells_every_step_one(db: Conn) -> None:
    families = [make_family(db, f"Burst {n}") for n in range(20)]
    db.execute("delete from contact_methods where user_id = %s", [families[0].alice])
    raised = rows(
        db,
        """insert into alerts (household_id, relative_id, kind, severity, message)
           select household_id, id, 'missed_calls', 'critical', 'Mum did not answer'
           from relatives where household_id = any (%s) returning id, household_id""",
        [[f.household for f in families]],
    )
    told = {
        r["household_id"]: r["n"]
        for r in rows(
            db,
            """select household_id, count(*) as n from private.outbox
               where alert_id = any (%s) group by household_id""",
            [[r["id"] for r in raised]],
        )
    }
    # Each household's admin by 3 methods; the first has none, so its step 2 (bob) at once.
    assert told == {f.household: (1 if f is families[0] else 3) for f in families}
    steps = rows(
        db,
        "select step, owner from (select o.step, o.user_id as owner, o.household_id"
        " from private.outbox o) x where household_id = %s",
        [families[0].household],
    )
    assert steps == [{"step": 2, "owner": families[0].bob}]
