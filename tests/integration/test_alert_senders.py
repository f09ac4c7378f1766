"""The alert senders against the emulators, over the real protocols, each answer classified.

- Web Push: pywebpush's encryption and our VAPID header pass the push service's checks, and
  the push service decrypts the payload with the browser's keys; 404/410/413/429/401 classify
  as the outbox expects.
- Twilio: our sender's form POST is accepted (201 with an SM sid); 21211 and 21610 are dead
  numbers, 429 a retry, a wrong token a configuration fault.
- SMTP: STARTTLS and AUTH, the mail read as sent (headers, text, HTML, links); a 550 is a
  dead address, a 451 a retry, a wrong password a configuration fault.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from python_worker.emulators.faults import Fault
from python_worker.notify.messages import email_html, email_subject, email_text, links
from python_worker.notify.outcomes import Delivery, Outcome
from python_worker.notify.settings import smtp_settings, twilio_settings, webpush_settings
from python_worker.notify.sms import SmsSender
from python_worker.notify.smtp import EmailSender
from python_worker.notify.webpush import WebPushSender
from tests.support.alerts import ThreadedAlerts, alert_emulators

T = TypeVar("T")
MESSAGE: dict[str, Any] = {
    "kind": "alert",
    "subject": "Mum did not answer 2 calls",
    "text": "Mum did not answer 2 calls at Tue 01 Dec 09:30 (her time).",
    "what": "Mum did not answer 2 calls at Tue 01 Dec 09:30",
    "happened_at_local": "Tue 01 Dec 2026 09:31 GMT",
    "household_name": "The Smiths",
    "ack_token": "a.AAAAAAAAAAAAAAAAAAAAAA.1900000000.BBBBBBBBBBBBBBBBBBBBBB",
    "call_token": "c.AAAAAAAAAAAAAAAAAAAAAA.1900000000.CCCCCCCCCCCCCCCCCCCCCC",
}


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedAlerts]:
    with alert_emulators(tmp_path_factory.mktemp("alerts")) as threaded:
        yield threaded


def run(threaded: ThreadedAlerts, coroutine: Coroutine[Any, Any, T]) -> T:
    """Senders run on the emulators' loop: it is the only loop of the test."""
    return threaded.run(coroutine)


# -- Web Push ---------------------------------------------------------------------------------


def push_once(
    alerts: ThreadedAlerts, subscription: dict[str, Any], payload: bytes, **kw: Any
) -> Delivery:
    sender = WebPushSender.from_settings(webpush_settings(alerts.emulators.env()))  # type: ignore[arg-type]

    async def go() -> Delivery:
        try:
            return await sender.send(subscription, payload, **kw)
        finally:
            await sender.aclose()

    return run(alerts, go())


def test_a_web_push_is_decrypted_by_the_push_service_with_the_browsers_keys(
    alerts: ThreadedAlerts,
) -> None:
    subscription = alerts.emulators.webpush.new_subscription()
    payload = json.dumps({"title": "Mum did not answer", "n": 2}).encode()
    result = push_once(alerts, subscription, payload, topic="alert1")
    assert result.outcome is Outcome.DELIVERED, result
    assert result.status == 201
    assert result.message_id
    assert result.message_id.startswith(alerts.emulators.webpush.origin)
    sub_id = subscription["endpoint"].rsplit("/", 1)[1]
    [received] = alerts.emulators.webpush.inbox.since(sub_id, 0)
    assert received["payload"] == {"title": "Mum did not answer", "n": 2}
    assert received["urgency"] == "high"
    assert received["topic"] == "alert1"
    assert received["vapid_sub"] == "mailto:alerts@callpanion.test"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (404, Outcome.METHOD_DEAD),
        (410, Outcome.METHOD_DEAD),
        (413, Outcome.OUR_BUG),
        (429, Outcome.RETRY),
        (503, Outcome.RETRY),
        (401, Outcome.CONFIG_FAULT),
        (403, Outcome.CONFIG_FAULT),
    ],
)
def test_push_service_answers_are_classified(
    alerts: ThreadedAlerts, status: int, outcome: Outcome
) -> None:
    subscription = alerts.emulators.webpush.new_subscription()
    sub_id = subscription["endpoint"].rsplit("/", 1)[1]
    alerts.emulators.webpush.faults.add(sub_id, Fault(status=status, retry_after="7", times=1))
    result = push_once(alerts, subscription, b"{}")
    assert (result.outcome, result.status) == (outcome, status)
    if status == 429:
        assert result.retry_after_s == 7


def test_an_unsubscribed_browser_is_a_dead_method(alerts: ThreadedAlerts) -> None:
    subscription = alerts.emulators.webpush.new_subscription()
    alerts.emulators.webpush.subscriptions[subscription["endpoint"].rsplit("/", 1)[1]].gone = True
    assert push_once(alerts, subscription, b"{}").outcome is Outcome.METHOD_DEAD


def test_a_subscription_with_someone_elses_keys_does_not_decrypt(alerts: ThreadedAlerts) -> None:
    ours = alerts.emulators.webpush.new_subscription()
    theirs = alerts.emulators.webpush.new_subscription()
    forged = {**ours, "keys": theirs["keys"]}
    result = push_once(alerts, forged, b"{}")
    assert (result.outcome, result.status) == (Outcome.OUR_BUG, 400)
    assert "decrypt" in (result.detail or "")


# -- SMS ----------------------------------------------------------------------------------------


def sms_once(
    alerts: ThreadedAlerts, to: str, body: str, env: dict[str, str] | None = None
) -> Delivery:
    sender = SmsSender(twilio_settings(env or alerts.emulators.env()))  # type: ignore[arg-type]

    async def go() -> Delivery:
        try:
            return await sender.send(to, body)
        finally:
            await sender.aclose()

    return run(alerts, go())


def test_an_sms_is_accepted_with_a_message_sid(alerts: ThreadedAlerts) -> None:
    result = sms_once(alerts, "+447700900123", "CallPanion: Mum did not answer")
    assert result.outcome is Outcome.DELIVERED
    assert result.message_id
    assert result.message_id.startswith("SM")
    [got] = [
        m
        for m in alerts.emulators.twilio.inbox.since("+447700900123", 0)
        if m["sid"] == result.message_id
    ]
    assert got["body"] == "CallPanion: Mum did not answer"


@pytest.mark.parametrize(
    ("to", "state", "outcome", "reason"),
    [
        ("447700900123", None, Outcome.METHOD_DEAD, "21211"),
        ("+447700900999", "unsubscribed", Outcome.METHOD_DEAD, "21610"),
    ],
)
def test_twilio_dead_numbers(
    alerts: ThreadedAlerts, to: str, state: str | None, outcome: Outcome, reason: str
) -> None:
    if state:
        alerts.emulators.twilio.number_states[to] = state
    result = sms_once(alerts, to, "hello")
    assert (result.outcome, result.reason) == (outcome, reason)


def test_twilio_rate_limit_is_a_retry_and_bad_credentials_a_config_fault(
    alerts: ThreadedAlerts,
) -> None:
    alerts.emulators.twilio.faults.add("+447700900555", Fault(status=429, reason="20429", times=1))
    assert sms_once(alerts, "+447700900555", "hi").outcome is Outcome.RETRY
    env = {**alerts.emulators.env(), "TWILIO_AUTH_TOKEN": "wrong"}
    result = sms_once(alerts, "+447700900555", "hi", env)
    assert (result.outcome, result.status, result.reason) == (Outcome.CONFIG_FAULT, 401, "20003")


# -- email --------------------------------------------------------------------------------------


def mail_once(
    alerts: ThreadedAlerts, to: str, env: dict[str, str] | None = None, unique: str = "u1"
) -> Delivery:
    sender = EmailSender(smtp_settings(env or alerts.emulators.env()))  # type: ignore[arg-type]
    link = links(MESSAGE, "https://api.callpanion.test")
    return run(
        alerts,
        sender.send(
            to,
            email_subject(MESSAGE),
            email_text(MESSAGE, link),
            email_html(MESSAGE, link),
            unique=unique,
        ),
    )


def test_an_email_is_read_as_sent_over_starttls_with_auth(alerts: ThreadedAlerts) -> None:
    result = mail_once(alerts, "alice@example.com", unique="outbox-1")
    assert result.outcome is Outcome.DELIVERED
    received = alerts.emulators.smtp.inbox.since("alice@example.com", 0)
    assert len(received) == 1
    mail: dict[str, Any] = dict(received[0])
    assert mail["tls"] is True
    assert mail["message_id"] == result.message_id == "<outbox-1@callpanion.test>"
    assert mail["subject"] == "Mum did not answer 2 calls"
    assert mail["from"] == "CallPanion <alerts@callpanion.test>"
    assert "Tue 01 Dec 2026 09:31 GMT" in mail["text"]
    assert "Call her now" in mail["html"]
    assert mail["links"] == [
        "https://api.callpanion.test/alerts/ack?token=" + MESSAGE["ack_token"],
        "https://api.callpanion.test/alerts/call?token=" + MESSAGE["call_token"],
    ]


def test_smtp_answers_are_classified(alerts: ThreadedAlerts) -> None:
    alerts.emulators.smtp.rejected.add("gone@example.com")
    dead = mail_once(alerts, "gone@example.com")
    assert (dead.outcome, dead.status) == (Outcome.METHOD_DEAD, 550)
    alerts.emulators.smtp.faults.add("busy@example.com", Fault(status=451, times=1))
    assert mail_once(alerts, "busy@example.com").outcome is Outcome.RETRY
    env = {**alerts.emulators.env(), "SMTP_PASSWORD": "wrong"}
    bad = mail_once(alerts, "alice@example.com", env)
    assert (bad.outcome, bad.status) == (Outcome.CONFIG_FAULT, 535)


def test_smtp_refuses_auth_before_starttls(alerts: ThreadedAlerts, tmp_path: Path) -> None:
    import aiosmtplib

    env = alerts.emulators.env()

    async def plain() -> int:
        client = aiosmtplib.SMTP(hostname="localhost", port=int(env["SMTP_PORT"]), start_tls=False)
        await client.connect()
        try:
            with pytest.raises(aiosmtplib.SMTPException):
                await client.login(env["SMTP_USERNAME"], env["SMTP_PASSWORD"])
            code, _ = await client.execute_command(b"MAIL", b"FROM:<x@example.com>")
            return code
        finally:
            client.close()

    assert run(alerts, plain()) == 530
    asyncio.get_event_loop_policy()
