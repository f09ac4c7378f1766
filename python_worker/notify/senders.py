"""The configured alert senders, and one outbox row turned into one message by its channel.

A row for a channel this worker has no settings for is a configuration fault (the household
is told once, SQL side), never a silent drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from python_worker.notify.messages import (
    email_html,
    email_subject,
    email_text,
    links,
    push_payload,
    sms_text,
)
from python_worker.notify.outcomes import Delivery, Outcome
from python_worker.notify.settings import smtp_settings, twilio_settings, webpush_settings
from python_worker.notify.sms import SmsSender
from python_worker.notify.smtp import EmailSender
from python_worker.notify.webpush import WebPushSender

#: Where Twilio posts delivery reports and replies, on the API's public URL.
TWILIO_STATUS_PATH = "/v1/webhooks/twilio/status"
TWILIO_INBOUND_PATH = "/v1/webhooks/twilio/sms"

SETTING_OF = {
    "webpush": "VAPID_PRIVATE_KEY_FILE",
    "email": "SMTP_HOST",
    "sms": "TWILIO_ACCOUNT_SID",
}


def not_configured(channel: str) -> Delivery:
    """The result for a message whose channel this worker has no settings for."""
    return Delivery(
        channel,
        Outcome.CONFIG_FAULT,
        0,
        "not_configured",
        detail=f"{channel} is not configured on this worker (set {SETTING_OF.get(channel, '?')})",
    )


class Notifiers:
    """Web Push, email and SMS senders (any may be absent) and the public URL for links."""

    def __init__(
        self,
        webpush: WebPushSender | None,
        email: EmailSender | None,
        sms: SmsSender | None,
        *,
        public_url: str,
    ) -> None:
        self.webpush = webpush
        self.email = email
        self.sms = sms
        self.public_url = public_url.rstrip("/")

    @classmethod
    def from_env(cls, public_url: str, env: Mapping[str, str] | None = None) -> Notifiers:
        """The senders configured by VAPID_* / SMTP_* / TWILIO_* (each may be absent)."""
        push = webpush_settings(env)
        mail = smtp_settings(env)
        sms = twilio_settings(env)
        base = public_url.rstrip("/")
        return cls(
            WebPushSender.from_settings(push) if push else None,
            EmailSender(mail) if mail else None,
            SmsSender(sms, status_callback=f"{base}{TWILIO_STATUS_PATH}") if sms else None,
            public_url=base,
        )

    async def deliver(
        self,
        outbox_id: str,
        channel: str | None,
        destination: dict[str, Any] | None,
        message: dict[str, Any],
        alert_id: str | None = None,
    ) -> Delivery:
        """Lay the message out for its channel and send it: the classified answer."""
        link = links(message, self.public_url)
        destination = destination or {}
        if channel == "webpush":
            if self.webpush is None:
                return not_configured(channel)
            payload = push_payload({**message, "alert_id": alert_id}, link, outbox_id)
            urgency = "high" if message.get("critical") else "normal"
            return await self.webpush.send(
                destination, payload, urgency=urgency, topic=outbox_id.replace("-", "")[:32]
            )
        if channel == "email":
            if self.email is None:
                return not_configured(channel)
            return await self.email.send(
                str(destination.get("email") or ""),
                email_subject(message),
                email_text(message, link),
                email_html(message, link),
                unique=outbox_id,
            )
        if channel == "sms":
            if self.sms is None:
                return not_configured(channel)
            return await self.sms.send(str(destination.get("phone") or ""), sms_text(message, link))
        return Delivery(str(channel), Outcome.OUR_BUG, 0, "unknown_channel")

    async def aclose(self) -> None:
        for sender in (self.webpush, self.email, self.sms):
            if sender is not None:
                await sender.aclose()
