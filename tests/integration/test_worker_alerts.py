"""The worker tells the family: a real `callpanion worker` process drains the alert outbox
into the Web Push, Twilio and SMTP emulators, with the calls' claim/lease/record machinery.

- verification codes go out by email and SMS, and entering them verifies the methods;
- an alert raised reaches the admin by every verified method: the mail read as sent, the push
  decrypted by the push service, the SMS at Twilio; with the member's zone and both links;
- unacknowledged, it escalates to the next contact; acknowledged, it stops;
- a dead address (410, 21211, 550) disables the method with the reason, visible to the
  household in `alert_deliveries`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.alerts import (
    ThreadedAlerts,
    add_method,
    alert_emulators,
    code_in,
    confirm_method,
)
from tests.support.worker import Conn, Workers, wait_for
from tests.support.world import add_household

PUBLIC_URL = "https://api.callpanion.test"


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedAlerts]:
    with alert_emulators(tmp_path_factory.mktemp("alerts"), twilio_callbacks=False) as threaded:
        yield threaded


def mails(alerts: ThreadedAlerts, address: str) -> list[dict[str, Any]]:
    return alerts.emulators.smtp.inbox.since(address, 0)


def texts(alerts: ThreadedAlerts, number: str) -> list[dict[str, Any]]:
    return alerts.emulators.twilio.inbox.since(number, 0)


def pushes(alerts: ThreadedAlerts, subscription: dict[str, Any]) -> list[dict[str, Any]]:
    return alerts.emulators.webpush.inbox.since(subscription["endpoint"].rsplit("/", 1)[1], 0)


def verified_family(wdb: Conn, alerts: ThreadedAlerts, workers: Workers) -> dict[str, Any]:
    """Alice (admin: email, SMS, browser) and Bob (member: email), verified through the worker."""
    tag = uuid.uuid4().hex[:8]
    house = add_household(wdb, f"The Smiths {tag}", {"alice": "admin", "bob": "member"})
    alice, bob = house.members["alice"], house.members["bob"]
    # The world's household names alice at step 1 of its chain; bob is the next contact.
    wdb.execute(
        "insert into public.escalation_contacts (household_id, user_id, step) values (%s, %s, 2)",
        [house.id, bob],
    )
    family: dict[str, Any] = {
        "house": house,
        "alice_email": f"alice-{tag}@example.com",
        "bob_email": f"bob-{tag}@example.com",
        "alice_phone": f"+4477009{int(tag, 16) % 100000:05d}",
        "subscription": alerts.emulators.webpush.new_subscription(),
    }
    methods = {
        "alice_email": (alice, add_method(wdb, alice, house.id, "email", family["alice_email"])),
        "alice_phone": (alice, add_method(wdb, alice, house.id, "sms", family["alice_phone"])),
        "bob_email": (bob, add_method(wdb, bob, house.id, "email", family["bob_email"])),
    }
    push = add_method(wdb, alice, house.id, "webpush", subscription=family["subscription"])
    assert push["verified"] is True
    for key, (user, method) in methods.items():
        assert method["verified"] is False
        assert method["verification_sent"] is True
        address, phone = family[key], "phone" in key

        def received(a: str = address, sms: bool = phone) -> list[dict[str, Any]]:
            return texts(alerts, a) if sms else mails(alerts, a)

        message = wait_for(f"the code for {key}", received)[-1]
        code = code_in(message.get("body") or message.get("text") or "")
        assert code, message
        assert confirm_method(wdb, user, method["method_id"], code)["verified"] is True
    family["methods"] = {k: m for k, (_, m) in methods.items()} | {"push": push}
    return family


def raise_alert(wdb: Conn, house: Any, message: str) -> uuid.UUID:
    row = wdb.execute(
        "insert into public.alerts (household_id, relative_id, kind, severity, message)"
        " values (%s, %s, 'missed_calls', 'critical', %s) returning id",
        [house.id, house.relative, message],
    ).fetchone()
    assert row is not None
    alert_id: uuid.UUID = row["id"]
    return alert_id


def link_token(mail: dict[str, Any], path: str) -> str:
    [link] = [u for u in mail["links"] if urlsplit(u).path == path]
    token: str = parse_qs(urlsplit(link).query)["token"][0]
    return token


def test_an_alert_reaches_the_admin_by_every_method_then_escalates_until_acknowledged(
    wdb: Conn, alerts: ThreadedAlerts, workers: Workers
) -> None:
    workers.start(CALLPANION_PUBLIC_API_URL=PUBLIC_URL, **alerts.emulators.env())  # type: ignore[arg-type]
    family = verified_family(wdb, alerts, workers)
    house = family["house"]

    # No acknowledgement: alice by every method, then bob (the next step of the chain).
    first = raise_alert(wdb, house, "Mum did not answer 2 calls")
    mail = wait_for(
        "alice's email",
        lambda: [
            m
            for m in mails(alerts, family["alice_email"])
            if "Mum did not answer 2" in m["subject"]
        ],
    )[0]
    assert mail["tls"] is True
    assert "When:" in mail["text"]
    assert "(Europe/London)" in mail["text"]
    assert {urlsplit(u).path for u in mail["links"]} == {"/alerts/ack", "/alerts/call"}
    push = wait_for(
        "alice's push",
        lambda: [
            p
            for p in pushes(alerts, family["subscription"])
            if p["payload"].get("alert_id") == str(first)
        ],
    )[0]
    assert push["payload"]["type"] == "callpanion_alert"
    assert push["payload"]["relative_name"] == "Mum"
    assert push["urgency"] == "high"
    sms = wait_for(
        "alice's SMS",
        lambda: [
            t for t in texts(alerts, family["alice_phone"]) if "Mum did not answer 2" in t["body"]
        ],
    )[0]
    assert "Reply OK" in sms["body"]
    # The chain's wait (10 minutes by default) is over: the worker's own claims reach step 2.
    wdb.execute(
        "update private.alert_escalations set next_step_at = now() where alert_id = %s", [first]
    )
    escalated = wait_for(
        "bob's email (step 2)",
        lambda: [
            m for m in mails(alerts, family["bob_email"]) if "Mum did not answer 2" in m["subject"]
        ],
    )[0]
    assert escalated["subject"].startswith("Still unacknowledged")

    # Acknowledged by alice's link: bob is never told.
    second = raise_alert(wdb, house, "Mum did not answer 3 calls")
    mail = wait_for(
        "alice's second email",
        lambda: [
            m
            for m in mails(alerts, family["alice_email"])
            if "Mum did not answer 3" in m["subject"]
        ],
    )[0]
    answer = wdb.execute(
        "select public.redeem_alert_link(%s) as r", [link_token(mail, "/alerts/ack")]
    ).fetchone()
    assert answer is not None
    assert answer["r"]["result"] in ("acknowledged", "already_acknowledged")
    stopped = wdb.execute(
        "select stopped_at, stop_reason from private.alert_escalations where alert_id = %s",
        [second],
    ).fetchone()
    assert stopped is not None
    assert stopped["stop_reason"] == "acknowledged"
    # However late the next step would be, it is not reached for an acknowledged alert.
    wdb.execute("select public.run_alert_escalations(now() + interval '1 day')")
    steps = wdb.execute(
        "select step, status from public.alert_deliveries(p_alert_id => %s) where step > 1",
        [second],
    ).fetchall()
    assert all(s["status"] == "cancelled" for s in steps), steps
    assert not [
        m for m in mails(alerts, family["bob_email"]) if "Mum did not answer 3" in m["subject"]
    ]


def test_a_dead_address_disables_the_method_with_the_reason(
    wdb: Conn, alerts: ThreadedAlerts, workers: Workers
) -> None:
    workers.start(CALLPANION_PUBLIC_API_URL=PUBLIC_URL, **alerts.emulators.env())  # type: ignore[arg-type]
    family = verified_family(wdb, alerts, workers)
    house = family["house"]
    sub_id = family["subscription"]["endpoint"].rsplit("/", 1)[1]
    alerts.emulators.webpush.subscriptions[sub_id].gone = True
    alerts.emulators.smtp.rejected.add(family["alice_email"].lower())
    alerts.emulators.twilio.number_states[family["alice_phone"]] = "unsubscribed"
    raise_alert(wdb, house, "Mum did not answer 4 calls")

    def disabled() -> list[dict[str, Any]] | None:
        rows = wdb.execute(
            "select channel, disabled_reason from public.contact_methods"
            " where user_id = %s and disabled_at is not null",
            [house.members["alice"]],
        ).fetchall()
        return rows if len(rows) == 3 else None

    reasons = {
        r["channel"]: r["disabled_reason"] for r in wait_for("alice's 3 methods disabled", disabled)
    }
    assert "410" in reasons["webpush"]
    assert "550" in reasons["email"]
    assert "21610" in reasons["sms"]
