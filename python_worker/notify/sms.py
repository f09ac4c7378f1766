"""SMS through Twilio's Messages API: one form POST per message, HTTP Basic auth.

    POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json
         To, From | MessagingServiceSid, Body, StatusCallback

201 carries the message's `sid` (kept as the outbox row's message id, so status callbacks
find it); errors carry Twilio's `code` (PROTOCOLS.md, "SMS"), classified in outcomes.py.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from python_worker.notify.outcomes import Delivery, Outcome, classify_twilio
from python_worker.notify.settings import TwilioSettings
from python_worker.push.retry import parse_retry_after

#: Concurrent requests to Twilio (HTTP/1.1: one connection each).
MAX_CONNECTIONS = 50


class SmsSender:
    """Sends SMS as one Twilio account."""

    def __init__(self, settings: TwilioSettings, *, status_callback: str | None = None) -> None:
        self.settings = settings
        self.status_callback = status_callback
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        )
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            auth=(settings.account_sid, settings.auth_token),
            verify=verify,
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
        )
        self._path = f"/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
        # Requests wait for a connection here, not in the pool (whose wait counts towards
        # the request's timeout: a burst would time out in the queue, not at Twilio).
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def send(self, to: str, body: str) -> Delivery:
        """Send one SMS; its classified answer."""
        form = {"To": to, "Body": body}
        if self.settings.messaging_service_sid:
            form["MessagingServiceSid"] = self.settings.messaging_service_sid
        else:
            form["From"] = self.settings.sender or ""
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        try:
            async with self._slots:
                response = await self._client.post(self._path, data=form)
        except httpx.HTTPError as error:
            return Delivery(
                "sms", Outcome.RETRY, 0, type(error).__name__, detail=str(error) or None
            )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        code = answer.get("code")
        code = code if isinstance(code, int) else None
        outcome = classify_twilio(response.status_code, code)
        if outcome is Outcome.DELIVERED:
            return Delivery(
                "sms", outcome, response.status_code, None, message_id=answer.get("sid")
            )
        return Delivery(
            "sms",
            outcome,
            response.status_code,
            str(code) if code is not None else str(response.status_code),
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            detail=str(answer.get("message") or response.text)[:300],
        )

    async def aclose(self) -> None:
        await self._client.aclose()
