"""The demo's family: who is told when Mum does not answer, and how it stops.

Set-up, as the family does it on the dashboard (SQL functions, as the members themselves):

- alice (admin) adds her email and phone number, enters back the codes the worker sent there
  (read from the local SMTP server and the Twilio emulator), and subscribes her browser (a
  subscription made by the Web Push emulator, as a browser's push service makes one);
- bob (member) adds his email and verifies it the same way;
- alice sets the household's escalation to wait 5 seconds (not the default 10 minutes) and to
  go round once more, so the demo shows the escalation and the acknowledgement stopping it.

Then, when Mum's missed-call alert is raised, the timeline shows alice's email arriving in
the SMTP server, her Web Push decrypted by the push service and her SMS at Twilio; nobody
acknowledges, so bob is told after the wait; bob acknowledges with the link in his email (a
POST to the API, no login) and the chain stops: alice is not told again.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from dotenv import dotenv_values

from python_worker.emulators.process import admin_request
from python_worker.errors import CallPanionError
from python_worker.stack.member import acting_as_member, member_claims

ALICE = "alice@example.com"
BOB = "bob@example.com"
ALICE_PHONE = "+447700900001"
#: The demo household's escalation: short, so it shows within the demo.
ESCALATION_WAIT = "5 seconds"
FAMILY_TIMEOUT_S = 90.0
POLL_S = 0.2
CODE = re.compile(r"\b([0-9]{6})\b")
Out = Callable[[str], None]


class Emulated:
    """The alert emulators' inboxes, from the settings file `callpanion emulators` wrote."""

    def __init__(self, env_file: Path) -> None:
        env = {k: v or "" for k, v in dotenv_values(env_file).items()}
        self.ca = env["WEBPUSH_CA_FILE"]
        self.bases = {
            "email": env["CALLPANION_EMULATED_SMTP_ADMIN_URL"],
            "sms": env["TWILIO_BASE_URL"],
            "webpush": env["CALLPANION_EMULATED_WEBPUSH_URL"],
        }

    def inbox(self, channel: str, token: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"token": token, "after": 0, "wait": 0})
        answer = admin_request(self.bases[channel], self.ca, "GET", f"/_emulator/inbox?{query}")
        pushes = answer["pushes"]
        assert isinstance(pushes, list)
        return pushes

    def subscription(self) -> dict[str, Any]:
        return admin_request(self.bases["webpush"], self.ca, "POST", "/_emulator/subscriptions")

    def wait_for(
        self, channel: str, token: str, match: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + FAMILY_TIMEOUT_S
        while time.monotonic() < deadline:
            for message in self.inbox(channel, token):
                if match(message):
                    return message
            time.sleep(POLL_S)
        raise CallPanionError(f"the demo waited {FAMILY_TIMEOUT_S:g} s for {what} in vain")


def _rpc(conn: psycopg.Connection[Any], who: str, query: Any, params: Any) -> Any:
    with acting_as_member(conn, member_claims(conn, who)):
        row = conn.execute(query, params).fetchone()
    return row["r"] if row else None


def _add(
    conn: psycopg.Connection[Any],
    who: str,
    household: uuid.UUID,
    channel: str,
    address: str | None = None,
    subscription: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = _rpc(
        conn,
        who,
        "select public.add_contact_method(p_household_id => %s, p_channel => %s,"
        " p_address => %s, p_subscription => %s::jsonb) as r",
        [household, channel, address, json.dumps(subscription) if subscription else None],
    )
    return result


def _verify(
    conn: psycopg.Connection[Any],
    emulated: Emulated,
    who: str,
    household: uuid.UUID,
    channel: str,
    address: str,
    out: Out,
) -> None:
    method = _add(conn, who, household, channel, address)
    if method["verified"]:
        out(f"            {who}'s {channel} {address} is already verified")
        return
    token = address.lower() if channel == "email" else address

    def has_code(message: dict[str, Any]) -> bool:
        return CODE.search(str(message.get("text") or message.get("body") or "")) is not None

    message = emulated.wait_for(channel, token, has_code, f"the code sent to {address}")
    found = CODE.search(str(message.get("text") or message.get("body") or ""))
    assert found is not None
    _rpc(
        conn,
        who,
        "select public.confirm_contact_method(p_method_id => %s, p_code => %s) as r",
        [method["method_id"], found.group(1)],
    )
    out(f"            {who} entered the code sent to {address} ({channel}): verified")


def set_up_family(
    conn: psycopg.Connection[Any], env_file: Path, household: uuid.UUID, out: Out
) -> dict[str, Any]:
    """Verified methods for alice and bob, and a short escalation; what the watch needs."""
    emulated = Emulated(env_file)
    out("            the family's contact methods (dashboard; codes sent by the worker):")
    # A browser subscription lives as long as the push service that made it: the emulator is
    # new with every demo, so alice's old browsers go and her current one comes in.
    for row in conn.execute(
        "select m.id from public.contact_methods m join auth.users u on u.id = m.user_id"
        " where m.household_id = %s and lower(u.email) = %s and m.channel = 'webpush'",
        [household, ALICE],
    ).fetchall():
        _rpc(conn, ALICE, "select public.remove_contact_method(%s) as r", [row["id"]])
    subscription = emulated.subscription()
    _add(conn, ALICE, household, "webpush", subscription=subscription)
    out("            alice's browser subscribed to Web Push (verified at once)")
    _verify(conn, emulated, ALICE, household, "email", ALICE, out)
    _verify(conn, emulated, ALICE, household, "sms", ALICE_PHONE, out)
    _verify(conn, emulated, BOB, household, "email", BOB, out)
    with acting_as_member(conn, member_claims(conn, ALICE)):
        conn.execute(
            """insert into public.escalation_policies (household_id, wait, repeats)
               values (%s, %s::interval, 1)
               on conflict (household_id) do update set wait = excluded.wait,
                 repeats = excluded.repeats""",
            [household, ESCALATION_WAIT],
        )
    out(
        f"            escalation: admins, then members, {ESCALATION_WAIT} apart, once more "
        "round (a household setting; the default wait is 10 minutes)"
    )
    return {"emulated": emulated, "subscription": subscription["endpoint"].rsplit("/", 1)[1]}


def _post_form(url: str, fields: dict[str, str]) -> int:
    request = urllib.request.Request(  # noqa: S310 (the demo's own API on loopback)
        url,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        status: int = response.status
        return status


def watch_family(
    conn: psycopg.Connection[Any],
    family: dict[str, Any],
    alert_id: uuid.UUID,
    clock: Callable[[], str],
    out: Out,
) -> dict[str, Any]:
    """Print who is told, by which method and how long after the alert; then bob's
    acknowledgement by the link, and that nobody else is told. The `--json` summary."""
    emulated: Emulated = family["emulated"]
    row = conn.execute(
        "select message, extract(epoch from created_at)::float8 as at from public.alerts"
        " where id = %s",
        [alert_id],
    ).fetchone()
    assert row is not None
    what, raised = str(row["message"]), float(row["at"])
    told: list[dict[str, Any]] = []

    def about(message: dict[str, Any]) -> bool:
        text = str(message.get("subject") or message.get("body") or "")
        return what[:60] in text

    def tell(
        who: str,
        channel: str,
        token: str,
        step: int,
        match: Callable[[dict[str, Any]], bool],
        how: str,
    ) -> dict[str, Any]:
        message = emulated.wait_for(channel, token, match, f"{who}'s {channel}")
        after = round(float(message["received_at"]) - raised, 3)
        told.append({"who": who, "method": channel, "step": step, "after_alert_s": after})
        out(f"{clock()}  told {who} by {how} (step {step}, {after:.3f} s after the alert)")
        return message

    tell(ALICE, "email", ALICE, 1, about, "email (in the local SMTP server, STARTTLS)")
    push_id = family["subscription"]
    tell(
        ALICE,
        "webpush",
        push_id,
        1,
        lambda p: (
            isinstance(p.get("payload"), dict) and p["payload"].get("alert_id") == str(alert_id)
        ),
        "Web Push (decrypted by the push service with the browser's keys)",
    )
    tell(ALICE, "sms", ALICE_PHONE, 1, about, "SMS (at the Twilio emulator)")
    out(f"{clock()}  nobody acknowledged within {ESCALATION_WAIT}: the escalation goes on")
    bobs = tell(BOB, "email", BOB, 2, about, "email (escalated: the next contact)")
    links = [str(u) for u in bobs.get("links", []) if "/alerts/ack?" in str(u)]
    if not links:
        raise CallPanionError(f"bob's email has no acknowledgement link: {bobs.get('links')}")
    ack = links[0]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(ack).query)["token"][0]
    base = ack.split("/alerts/ack", 1)[0]
    status = _post_form(f"{base}/alerts/ack", {"token": token})
    acked = conn.execute(
        "select extract(epoch from acknowledged_at)::float8 as at from public.alerts where id = %s",
        [alert_id],
    ).fetchone()
    after = round(float(acked["at"]) - raised, 3) if acked and acked["at"] else None
    stopped = conn.execute(
        "select stop_reason from private.alert_escalations where alert_id = %s", [alert_id]
    ).fetchone()
    out(
        f"{clock()}  bob acknowledged with the link in his email (HTTP {status}, no login): "
        f"the escalation stopped ({stopped['stop_reason'] if stopped else '?'}); alice is not "
        "told again"
    )
    alice_mails = [m for m in emulated.inbox("email", ALICE) if about(m)]
    return {
        "alert_id": str(alert_id),
        "told": told,
        "acknowledged": {"by": BOB, "via": "link", "after_alert_s": after},
        "escalation_stopped": bool(stopped and stopped["stop_reason"] == "acknowledged"),
        "alice_emails_for_this_alert": len(alice_mails),
    }
