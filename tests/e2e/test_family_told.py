"""When Mum does not answer, the family is told: the whole flow as separate processes.

`callpanion emulators` (FCM, APNs, and the Web Push service, Twilio and the SMTP server),
`callpanion api` and `callpanion worker` run as their own processes on the test cluster:

- the members' email and SMS are verified with the codes the worker sends them;
- an alert raised reaches alice by email (read from the SMTP server as sent), by Web Push
  (decrypted by the push service) and by SMS (at Twilio), each naming Mum, the time in
  alice's zone and the links; Twilio's status callbacks reach the API, signed;
- unacknowledged, it escalates to bob; acknowledged through the link (a POST to the API, no
  login), it stops, and the link cannot be used again; a forged link is refused;
- an SMS reply "OK" (Twilio's signed inbound webhook) acknowledges; a forged one is refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from python_worker.emulators.alerts import TWILIO_NUMBER
from python_worker.stack.cluster import free_port
from tests.support.alerts import (
    Process,
    RemoteAlerts,
    add_method,
    clean_env,
    code_in,
    confirm_method,
    http_ok,
)
from tests.support.worker import Conn, Workers, wait_for
from tests.support.world import add_household


@pytest.fixture
def stack(worker_database: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The emulators and the API as processes; the worker is started by each test."""
    api_port = free_port()
    public = f"http://127.0.0.1:{api_port}"
    env = {**clean_env(), "CALLPANION_PUBLIC_API_URL": public}
    emulators = Process(
        ["emulators", "--json", "--dir", str(tmp_path / "emu")], env, tmp_path / "emulators.log"
    )
    api: Process | None = None
    try:
        emulated: dict[str, str] = json.loads(emulators.first_line())
        api = Process(
            ["api"],
            {
                **env,
                "CALLPANION_API_DATABASE_URL": worker_database,
                "CALLPANION_API_PORT": str(api_port),
                "TWILIO_AUTH_TOKEN": emulated["TWILIO_AUTH_TOKEN"],
            },
            tmp_path / "api.log",
        )
        wait_for("the API", lambda: http_ok(f"{public}/healthz"), timeout=30)
        yield {"public": public, "env": emulated, "remote": RemoteAlerts(emulated)}
    finally:
        if api is not None:
            api.stop()
        emulators.stop()


def verified_family(wdb: Conn, remote: RemoteAlerts) -> dict[str, Any]:
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
        "subscription": remote.new_subscription(),
    }
    wdb.execute(
        "insert into public.member_alert_settings (household_id, user_id, timezone)"
        " values (%s, %s, 'America/New_York')",
        [house.id, alice],
    )
    assert add_method(wdb, alice, house.id, "webpush", subscription=family["subscription"])[
        "verified"
    ]
    for user, channel, key in (
        (alice, "email", "alice_email"),
        (alice, "sms", "alice_phone"),
        (bob, "email", "bob_email"),
    ):
        method = add_method(wdb, user, house.id, channel, family[key])
        kind = "sms" if channel == "sms" else "mail"
        token = family[key].lower() if kind == "mail" else family[key]
        message = remote.wait_for(
            kind, token, lambda m: code_in(m.get("body") or m.get("text") or "")
        )
        code = code_in(message.get("body") or message.get("text") or "")
        assert code is not None
        assert confirm_method(wdb, user, method["method_id"], code)["verified"] is True
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


def link(mail: dict[str, Any], path: str) -> str:
    [url] = [u for u in mail["links"] if urlsplit(u).path == path]
    found: str = url
    return found


def acknowledged(wdb: Conn, alert_id: uuid.UUID) -> bool:
    row = wdb.execute(
        "select acknowledged_at from public.alerts where id = %s", [alert_id]
    ).fetchone()
    return bool(row and row["acknowledged_at"])


def about(text: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the mail (by subject) or SMS (by body) that mentions `text`."""
    return lambda m: text in (m.get("subject") or m.get("body") or "")


def test_the_family_is_told_escalated_and_stopped_by_the_link(
    wdb: Conn, stack: dict[str, Any], workers: Workers
) -> None:
    remote: RemoteAlerts = stack["remote"]
    workers.start(CALLPANION_PUBLIC_API_URL=stack["public"], **stack["env"])
    family = verified_family(wdb, remote)
    house = family["house"]

    first = raise_alert(wdb, house, "Mum did not answer 2 calls")
    mail = remote.wait_for("mail", family["alice_email"], about("Mum did not answer 2"))
    assert mail["tls"] is True
    assert mail["message_id"].endswith("@callpanion.test>")
    assert "(America/New_York)" in mail["text"]  # the time in alice's own zone
    assert link(mail, "/alerts/ack").startswith(stack["public"])
    assert 'href="' + link(mail, "/alerts/call") in mail["html"].replace("&amp;", "&")
    sub_id = family["subscription"]["endpoint"].rsplit("/", 1)[1]
    push = remote.wait_for("push", sub_id, lambda p: p["payload"].get("alert_id") == str(first))
    assert push["payload"]["relative_name"] == "Mum"
    assert (
        push["payload"]["ack_url"]
        == link(mail, "/alerts/ack").replace(
            parse_qs(urlsplit(link(mail, "/alerts/ack")).query)["token"][0], ""
        )
        + parse_qs(urlsplit(push["payload"]["ack_url"]).query)["token"][0]
    )
    sms = remote.wait_for("sms", family["alice_phone"], about("Mum did not answer 2"))
    assert "Reply OK" in sms["body"]

    # Twilio's signed status callbacks reach the API: the household sees "delivered".
    def delivered() -> bool:
        rows = wdb.execute(
            "select delivery_status from public.alert_deliveries(p_alert_id => %s)"
            " where channel = 'sms'",
            [first],
        ).fetchall()
        return bool(rows) and rows[0]["delivery_status"] == "delivered"

    wait_for("the SMS delivery report", delivered)

    # Nobody acknowledges: when the wait is over, bob (the next step) is told.
    wdb.execute(
        "update private.alert_escalations set next_step_at = now() where alert_id = %s", [first]
    )
    escalated = remote.wait_for("mail", family["bob_email"], about("Mum did not answer 2"))
    assert escalated["subject"].startswith("Still unacknowledged")

    # The next alert: alice's link acknowledges it without logging in; bob is never told.
    second = raise_alert(wdb, house, "Mum did not answer 3 calls")
    mail = remote.wait_for("mail", family["alice_email"], about("Mum did not answer 3"))
    ack = link(mail, "/alerts/ack")
    token = parse_qs(urlsplit(ack).query)["token"][0]
    page = httpx.get(ack)
    assert page.status_code == 200
    assert "<form method='post'" in page.text
    assert not acknowledged(wdb, second)  # a GET (a mail scanner) changes nothing
    done = httpx.post(
        f"{stack['public']}/alerts/ack",
        data={"token": token},
        headers={"accept": "application/json"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["result"] == "acknowledged"
    assert acknowledged(wdb, second)
    again = httpx.post(f"{stack['public']}/alerts/ack", data={"token": token})
    assert again.status_code == 409
    assert again.json() == {"error": "token: already used", "field": "token"}
    wdb.execute("select public.run_alert_escalations(now() + interval '1 day')")
    later = wdb.execute(
        "select status from public.alert_deliveries(p_alert_id => %s) where step > 1", [second]
    ).fetchall()
    assert all(r["status"] == "cancelled" for r in later), later
    assert not [
        m for m in remote.all("mail", family["bob_email"]) if "Mum did not answer 3" in m["subject"]
    ]


def test_forged_links_and_webhooks_are_refused_and_an_sms_reply_acknowledges(
    wdb: Conn, stack: dict[str, Any], workers: Workers
) -> None:
    remote: RemoteAlerts = stack["remote"]
    public = stack["public"]
    workers.start(CALLPANION_PUBLIC_API_URL=public, **stack["env"])
    family = verified_family(wdb, remote)
    alert = raise_alert(wdb, family["house"], "Mum did not answer 4 calls")
    mail = remote.wait_for(
        "mail", family["alice_email"], lambda m: "Mum did not answer 4" in m["subject"]
    )
    token = parse_qs(urlsplit(link(mail, "/alerts/ack")).query)["token"][0]

    # An attacker changes the signature, or the id, of a real token: forged.
    prefix, ident, exp, mac = token.split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    for forged in (f"{prefix}.{ident}.{exp}.{flipped}", f"{prefix}.{'A' * 22}.{exp}.{mac}"):
        refused = httpx.post(f"{public}/alerts/ack", data={"token": forged})
        assert refused.status_code == 403, refused.text
        assert refused.json()["field"] == "token"
    # A later expiry with the old signature: forged too (the expiry is signed).
    refused = httpx.post(
        f"{public}/alerts/ack", data={"token": f"{prefix}.{ident}.{int(exp) + 1}.{mac}"}
    )
    assert refused.status_code == 403
    assert httpx.post(f"{public}/alerts/ack", data={"token": "nonsense"}).status_code == 422
    assert httpx.get(f"{public}/alerts/ack", params={"token": "x"}).status_code == 422
    # An ack token on the call route does not ring anyone.
    assert httpx.post(f"{public}/alerts/call", data={"token": token}).status_code == 422
    assert not acknowledged(wdb, alert)

    # A forged Twilio webhook (no signature, or signed with another token) changes nothing.
    form = {
        "MessageSid": "SM" + "0" * 32,
        "From": family["alice_phone"],
        "To": TWILIO_NUMBER,
        "Body": "OK",
    }
    assert httpx.post(f"{public}/v1/webhooks/twilio/sms", data=form).status_code == 401
    bad = httpx.post(
        f"{public}/v1/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": "bm9wZQ=="}
    )
    assert bad.status_code == 401
    assert not acknowledged(wdb, alert)

    # alice replies OK to the SMS: Twilio posts it, signed, and the alert is acknowledged.
    remote.wait_for("sms", family["alice_phone"], lambda m: "Mum did not answer 4" in m["body"])
    answer = remote.reply(family["alice_phone"], TWILIO_NUMBER, " ok! ")
    assert answer["status"] == 200
    assert acknowledged(wdb, alert)
