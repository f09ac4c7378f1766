"""Web Push to the dashboard: RFC 8030 over HTTP/2, VAPID (RFC 8292), aes128gcm (RFC 8291).

`pywebpush` encrypts the body for the browser's subscription (its `WebPusher.encode`) and
`py_vapid` signs the VAPID JWT; the request goes over one multiplexed HTTP/2 connection per
push service (httpx), as the calls' pushes do. The JWT is reused for an hour per push-service
origin (its `exp` is 12 h ahead, inside RFC 8292's 24 h): signing each push would cost an ECDSA
signature per alert for nothing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02
from pywebpush import WebPusher

from python_worker.notify.outcomes import Delivery, Outcome, classify_webpush
from python_worker.notify.settings import WebPushSettings
from python_worker.push.retry import parse_retry_after

#: The JWT's lifetime (RFC 8292 allows at most 24 h) and how long one is reused.
JWT_LIFETIME_S = 12 * 3600
JWT_REUSE_S = 3600
#: Pushes in flight at once (HTTP/2 multiplexes them over a few connections).
MAX_IN_FLIGHT = 200
#: RFC 8030 section 5.4 (the topic must be at most 32 base64url characters).
MAX_TOPIC = 32


def origin(endpoint: str) -> str:
    """The VAPID `aud`: scheme://host[:port] of the endpoint (RFC 8292 section 2)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class WebPushSender:
    """Signs, encrypts and posts pushes to browsers' push services."""

    def __init__(
        self,
        vapid: Vapid02,
        subject: str,
        *,
        ttl_s: int,
        ca_file: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.vapid = vapid
        self.subject = subject
        self.ttl_s = ttl_s
        self.clock = clock
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file else True
        )
        self._client = httpx.AsyncClient(
            http2=True,
            verify=verify,
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=50),
        )
        self._tokens: dict[str, tuple[float, str]] = {}
        # Requests wait here, not in httpx's pool (see sms.py).
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    @classmethod
    def from_settings(cls, settings: WebPushSettings) -> WebPushSender:
        vapid = Vapid02.from_pem(settings.private_key_file.read_bytes())
        return cls(vapid, settings.subject, ttl_s=settings.ttl_s, ca_file=settings.ca_file)

    def authorization(self, endpoint: str) -> str:
        """`vapid t=<JWT>, k=<public key>` for the endpoint's push service."""
        aud = origin(endpoint)
        now = self.clock()
        cached = self._tokens.get(aud)
        if cached is not None and now - cached[0] < JWT_REUSE_S:
            return cached[1]
        claims = {"aud": aud, "exp": int(now) + JWT_LIFETIME_S, "sub": self.subject}
        header: str = self.vapid.sign(claims)["Authorization"]
        self._tokens[aud] = (now, header)
        return header

    async def send(
        self,
        subscription: dict[str, Any],
        payload: bytes,
        *,
        urgency: str = "high",
        topic: str | None = None,
    ) -> Delivery:
        """Post one push; its classified answer (never raises for a provider's answer)."""
        endpoint = subscription.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith("https://"):
            return Delivery("webpush", Outcome.OUR_BUG, 0, "bad_subscription", detail="endpoint")
        try:
            body = WebPusher(subscription).encode(payload, "aes128gcm")["body"]
        except Exception as error:  # bad keys in a stored subscription: it can never work
            return Delivery(
                "webpush", Outcome.METHOD_DEAD, 0, "bad_keys", detail=f"subscription keys: {error}"
            )
        headers = {
            "TTL": str(self.ttl_s),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": urgency,
            "Authorization": self.authorization(endpoint),
        }
        if topic:
            headers["Topic"] = topic[:MAX_TOPIC]
        try:
            async with self._slots:
                response = await self._client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as error:
            return Delivery(
                "webpush", Outcome.RETRY, 0, type(error).__name__, detail=str(error) or None
            )
        outcome = classify_webpush(response.status_code)
        detail = None if outcome is Outcome.DELIVERED else response.text[:300]
        return Delivery(
            "webpush",
            outcome,
            response.status_code,
            str(response.status_code),
            message_id=response.headers.get("location"),
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            detail=detail,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
