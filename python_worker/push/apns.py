"""APNs sender: iOS incoming calls as PushKit VoIP pushes, and regular alert pushes.

- HTTP/2 over TLS (`python_worker.push.http2`), configurable host, port and CA bundle.
- Token-based auth: one ES256 provider JWT per .p8 key, made with pyjwt and shared by every
  connection. It is reused for TOKEN_REUSE_S (inside Apple's 20-60 minute window) and replaced
  on ExpiredProviderToken, but never sooner than 20 minutes after the last one: Apple answers
  faster changes with 429 TooManyProviderTokenUpdates.
- VoIP: `apns-topic: <bundle>.voip`, `apns-push-type: voip`, priority 10, `apns-expiration`
  from the call deadline, `apns-id` = our queue row id. Alerts ("missed call", "call
  cancelled") go to the app's regular APNs token with topic = bundle id: never as VoIP.
- One send path (`ApnsSender.send`) for every kind of push; a `PushKind` (VOIP, ALERT,
  BACKGROUND) holds what differs: topic, push type, priority and size limit.
- Every answer is classified per the APNs table of PROTOCOLS.md into a `SendResult`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from python_worker.push.http2 import (
    H2Client,
    H2Error,
    Response,
    client_ssl_context,
    unique,
)
from python_worker.push.outcomes import Outcome, PayloadTooLarge, SendResult, unreachable
from python_worker.push.payloads import (
    APNS_ALERT_LIMIT,
    APNS_VOIP_LIMIT,
    IncomingCall,
    apns_voip_payload,
)
from python_worker.push.retry import RetryPolicy, parse_retry_after
from python_worker.push.settings import ApnsSettings

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
# Apple: a provider token is valid for an hour and may be replaced at most every 20 minutes.
TOKEN_MIN_AGE_FOR_UPDATE_S = 20 * 60
TOKEN_REUSE_S = 45 * 60  # inside the 20-60 minute window, with room for clock skew
DEFAULT_TIMEOUT_S = 10.0
# Streams in flight per connection (APNs advertises ~1000 after the first success; the lower
# of the two applies). More sends wait in a fair queue.
DEFAULT_MAX_IN_FLIGHT = 1000

_TOKEN_DEAD = {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}


class ProviderToken:
    """The provider JWT of one .p8 key, shared by all connections."""

    def __init__(
        self,
        key: EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        *,
        reuse_s: float = TOKEN_REUSE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not TOKEN_MIN_AGE_FOR_UPDATE_S <= reuse_s <= 50 * 60:
            raise ValueError("provider tokens must be reused for 20-50 minutes")
        self._key = key
        self.key_id = key_id
        self.team_id = team_id
        self._reuse_s = reuse_s
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        self.generated = 0

    @property
    def age_s(self) -> float:
        return self._clock() - self._issued_at

    def current(self) -> str:
        """The token to send now: the cached one, or a new one once it is `reuse_s` old."""
        if self._token is None or self.age_s >= self._reuse_s:
            self._issue()
        assert self._token is not None
        return self._token

    def renew(self, refused: str) -> bool:
        """APNs said `refused` expired. Replace it unless that would break the 20-minute rule.

        Returns True when a usable different token is now current (made here or by a
        concurrent caller), False when replacing it so soon would be refused by Apple (the
        clock is probably wrong: an operator must look).
        """
        if refused != self._token:
            return True
        if self.age_s < TOKEN_MIN_AGE_FOR_UPDATE_S:
            return False
        self._issue()
        return True

    def _issue(self) -> None:
        now = self._clock()
        self._token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._issued_at = float(int(now))
        self.generated += 1


def classify(response: Response, attempt: int, policy: RetryPolicy) -> SendResult:
    """Turn an APNs answer into a SendResult (ExpiredProviderToken is handled by the sender)."""
    status = response.status
    apns_id = response.header("apns-id")
    # equivalent mutant: `status <= 200`: HTTP/2 has no final status below 200.
    if status == 200:
        return SendResult("apns", Outcome.DELIVERED, status, message_id=apns_id)
    reason: str | None = None
    timestamp: int | None = None
    try:
        parsed = json.loads(response.body)
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason")) if parsed.get("reason") else None
            ts = parsed.get("timestamp")
            timestamp = int(ts) if isinstance(ts, int | float) else None
    except ValueError:
        pass
    detail = f"APNs {status} {reason or '(no reason)'}"
    if reason in _TOKEN_DEAD and status in (400, 410):
        return SendResult(
            "apns",
            Outcome.TOKEN_DEAD,
            status,
            reason,
            apns_id,
            detail=detail,
            token_invalid_since_ms=timestamp,
        )
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.header("retry-after"))
        return SendResult(
            "apns",
            Outcome.RETRY,
            status,
            reason,
            apns_id,
            retry_after_s=policy.delay(attempt, retry_after),
            detail=detail,
        )
    if status == 403:
        return SendResult("apns", Outcome.CONFIG_FAULT, status, reason, apns_id, detail=detail)
    return SendResult("apns", Outcome.OUR_BUG, status, reason, apns_id, detail=detail)


def _unix_seconds(when: dt.datetime | int | None) -> str | None:
    if when is None:
        return None
    if isinstance(when, dt.datetime):
        return str(max(int(when.timestamp()), 0))
    return str(max(int(when), 0))


@dataclass(frozen=True)
class PushKind:
    """What differs between the kinds of push one app receives: topic, type, priority, size."""

    description: str  # in PayloadTooLarge's message
    topic_suffix: str  # after the bundle id
    push_type: bytes
    priority: bytes
    limit: int


#: PushKit VoIP: an incoming call and nothing else, to `<bundle>.voip`, at once.
VOIP = PushKind("VoIP", ".voip", b"voip", b"10", APNS_VOIP_LIMIT)
#: A regular alert to the app's APNs token (topic = bundle id), at once.
ALERT = PushKind("alert", "", b"alert", b"10", APNS_ALERT_LIMIT)
#: A background push (content-available): Apple requires priority 5 for these.
BACKGROUND = PushKind("background", "", b"background", b"5", APNS_ALERT_LIMIT)


class ApnsSender:
    """Sends APNs pushes for one app (bundle id) with one .p8 key."""

    def __init__(
        self,
        key_pem: str | bytes,
        key_id: str,
        team_id: str,
        bundle_id: str,
        *,
        host: str = PRODUCTION_HOST,
        port: int = 443,
        ca_file: str | None = None,
        connections: int = 1,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        token_reuse_s: float = TOKEN_REUSE_S,
        clock: Callable[[], float] = time.time,
        policy: RetryPolicy | None = None,
    ) -> None:
        key = load_pem_private_key(key_pem.encode() if isinstance(key_pem, str) else key_pem, None)
        if not isinstance(key, EllipticCurvePrivateKey):
            raise ValueError("the APNs key must be a P-256 (.p8) private key")
        if not bundle_id or bundle_id.endswith(".voip"):
            raise ValueError(f"bundle id must be the app's bundle id, got {bundle_id!r}")
        self.tokens = ProviderToken(key, key_id, team_id, reuse_s=token_reuse_s, clock=clock)
        self.bundle_id = bundle_id
        self._client = H2Client(
            host,
            port,
            ssl_context=client_ssl_context(ca_file),
            max_connections=connections,
            max_streams=max_in_flight,
        )
        self._timeout_s = timeout_s
        self._policy = policy or RetryPolicy()

    @classmethod
    def from_file(
        cls, key_file: str | Path, key_id: str, team_id: str, bundle_id: str, **options: object
    ) -> ApnsSender:
        return cls(Path(key_file).read_text(), key_id, team_id, bundle_id, **options)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: ApnsSettings, **options: object) -> ApnsSender:
        """Build from the APNS_* environment settings (`config.apns_settings`)."""
        return cls.from_file(
            settings.key_file,
            settings.key_id,
            settings.team_id,
            settings.bundle_id,
            host=settings.host,
            port=settings.port,
            ca_file=settings.ca_file,
            **options,
        )

    @property
    def connections_opened(self) -> int:
        return self._client.connections_opened

    async def send_call(
        self,
        call: IncomingCall,
        voip_token: str,
        *,
        apns_id: uuid.UUID | str,
        attempt: int = 1,
    ) -> SendResult:
        """Ring an iOS device: the VoIP push, expiring at the call's deadline."""
        return await self.send_voip(
            voip_token,
            apns_voip_payload(call),
            apns_id=apns_id,
            expiration=call.expires_at,
            attempt=attempt,
        )

    async def send_voip(
        self,
        device_token: str,
        payload: bytes,
        *,
        apns_id: uuid.UUID | str,
        expiration: dt.datetime | int | None,
        collapse_id: str | None = None,
        attempt: int = 1,
    ) -> SendResult:
        """A PushKit VoIP push (an incoming call and nothing else)."""
        return await self.send(
            VOIP,
            device_token,
            payload,
            apns_id=apns_id,
            expiration=expiration,
            collapse_id=collapse_id,
            attempt=attempt,
        )

    async def send_alert(
        self,
        device_token: str,
        payload: bytes,
        *,
        apns_id: uuid.UUID | str,
        expiration: dt.datetime | int | None = None,
        collapse_id: str | None = None,
        attempt: int = 1,
    ) -> SendResult:
        """A regular alert push to the app's APNs token ("missed call", "call cancelled")."""
        return await self.send(
            ALERT,
            device_token,
            payload,
            apns_id=apns_id,
            expiration=expiration,
            collapse_id=collapse_id,
            attempt=attempt,
        )

    async def send_background(
        self,
        device_token: str,
        payload: bytes,
        *,
        apns_id: uuid.UUID | str,
        expiration: dt.datetime | int | None = None,
        attempt: int = 1,
    ) -> SendResult:
        """A background push (content-available, no alert) to the app's regular APNs token,
        e.g. "stop ringing: the call was cancelled". Apple requires priority 5 for these."""
        return await self.send(
            BACKGROUND,
            device_token,
            payload,
            apns_id=apns_id,
            expiration=expiration,
            attempt=attempt,
        )

    async def send(
        self,
        kind: PushKind,
        device_token: str,
        payload: bytes,
        # equivalent mutant: `*` -> `/`: every caller passes the rest by keyword.
        *,
        apns_id: uuid.UUID | str,
        expiration: dt.datetime | int | None,
        collapse_id: str | None = None,
        attempt: int = 1,
    ) -> SendResult:
        """The one send path: a push of `kind`, its size checked against the kind's limit."""
        if len(payload) > kind.limit:
            raise PayloadTooLarge(f"APNs {kind.description} payload", len(payload), kind.limit)
        headers = [
            (b"apns-topic", (self.bundle_id + kind.topic_suffix).encode()),
            (b"apns-push-type", kind.push_type),
            (b"apns-priority", kind.priority),
            unique(b"apns-id", str(apns_id).lower().encode()),
            (b"content-type", b"application/json"),
        ]
        expires = _unix_seconds(expiration)
        if expires is not None:
            headers.append((b"apns-expiration", expires.encode()))
        if collapse_id is not None:
            headers.append((b"apns-collapse-id", collapse_id.encode()))
        path = b"/3/device/" + device_token.encode()
        # equivalent mutant: (0, 2), (1, 3) or (1, 1) behave alike: on the second try the
        # token is too young to renew (see below), so there is never a third.
        for try_number in (1, 2):
            token = self.tokens.current()
            try:
                response = await self._client.request(
                    b"POST",
                    path,
                    [(b"authorization", b"bearer " + token.encode()), *headers],
                    payload,
                    self._timeout_s,
                    # equivalent mutant: False only churns the HPACK table (speed, not result).
                    unique_path=True,
                )
            except H2Error as error:
                return unreachable("apns", error, self._policy.delay(attempt))
            result = classify(response, attempt, self._policy)
            if result.reason != "ExpiredProviderToken":
                return result
            # equivalent mutant: `try_number == 3` etc. A token issued for the second try is
            # too young to renew, so renew() refuses anyway, unless the clock jumps 20 minutes.
            if try_number == 2 or not self.tokens.renew(token):
                age = int(self.tokens.age_s)
                return SendResult(
                    "apns",
                    Outcome.CONFIG_FAULT,
                    response.status,
                    result.reason,
                    result.message_id,
                    detail=f"ExpiredProviderToken for a token {age} s old: check the clock",
                )
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()
