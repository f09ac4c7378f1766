"""APNs emulator: `POST /3/device/<token>` over HTTP/2 + TLS, as PROTOCOLS.md describes.

It verifies what Apple verifies and answers with Apple's statuses and reasons:
- the provider JWT (ES256, known key id, issuer = the key's team, not older than 60 minutes,
  not from the future) and its update rate: a connection that switches to a new token less
  than 20 minutes after the previous one gets 429 TooManyProviderTokenUpdates;
- `apns-topic` (a registered bundle id, `.voip` for `apns-push-type: voip` and only then),
  `apns-push-type`, `apns-priority`, `apns-expiration`, `apns-id`, `apns-collapse-id`;
- the payload: not empty, ≤ 5120 bytes for VoIP and ≤ 4096 otherwise;
- the device token against a registry: valid, unregistered (410 with a timestamp in ms),
  expired (410 ExpiredToken), bad (400 BadDeviceToken) or bound to another topic.

Like APNs it advertises one concurrent stream on a new connection and raises the limit after
the first request that authenticates. Success is a HEADERS frame that ends the stream (no DATA).
Everything received is recorded in `deliveries` (successes) and `attempts` (all answers).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from python_worker.emulators.admin import AdminRoutes
from python_worker.emulators.faults import Fault, Faults
from python_worker.emulators.inbox import Inbox
from python_worker.emulators.server import Action, Request, Response

TOKEN_MAX_AGE_S = 3600
TOKEN_MIN_UPDATE_INTERVAL_S = 20 * 60
VOIP_PAYLOAD_LIMIT = 5120
PAYLOAD_LIMIT = 4096
STREAMS_BEFORE_AUTH = 1
STREAMS_AFTER_AUTH = 1000
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "controls",
        "widgets",
    }
)
_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

PublicKey = RSAPublicKey | EllipticCurvePublicKey
TokenState = Literal["valid", "unregistered", "expired", "bad"]


@dataclass
class ApnsDelivery:
    """A push APNs accepted."""

    token: str
    apns_id: str
    topic: str | None
    push_type: str | None
    priority: str | None
    expiration: str | None
    collapse_id: str | None
    payload: dict[str, object] | None
    key_id: str | None
    connection: int
    received_at: float


@dataclass
class ApnsAttempt:
    """Any request to /3/device and the answer it got."""

    token: str
    apns_id: str
    status: int
    reason: str | None
    authorization: str | None
    connection: int
    at: float


@dataclass
class _TokenEntry:
    state: TokenState = "valid"
    topic: str | None = None  # the bundle id the token belongs to, when known
    since_ms: int = 0


@dataclass
class _Key:
    team_id: str
    public_key: PublicKey
    verified: dict[str, int] = field(default_factory=dict)  # token -> iat, once verified


class ApnsEmulator:
    """The APNs handler. Serve it with `HttpServer(emulator.handle, ssl_context=...)`."""

    def __init__(
        self,
        *,
        bundle_ids: set[str] | None = None,
        fast: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bundle_ids = set(bundle_ids or ())
        self.fast = fast
        self.clock = clock
        self.keys: dict[str, _Key] = {}
        self.tokens: dict[str, _TokenEntry] = {}
        self.faults = Faults()
        self.deliveries: list[ApnsDelivery] = []
        self.attempts: list[ApnsAttempt] = []
        self.delivered_count = 0
        self._lock = threading.Lock()
        self.inbox = Inbox(case_insensitive=True)
        self._admin = AdminRoutes(
            self.faults,
            self._deliveries,
            self._set_token_json,
            self.reset,
            token_key=str.lower,
            inbox=self.inbox,
        )

    # -- registry (tests, demo, admin endpoint) -----------------------------------------
    def add_key(self, key_id: str, team_id: str, public_key_pem: bytes) -> None:
        """Accept provider tokens signed by this .p8 key."""
        key = load_pem_public_key(public_key_pem)
        if not isinstance(key, EllipticCurvePublicKey):
            raise ValueError("an APNs key must be a P-256 key")
        self.keys[key_id] = _Key(team_id, key)

    def set_token(self, token: str, state: TokenState = "valid", topic: str | None = None) -> None:
        """Register a device token as valid, unregistered, expired or bad (for a bundle id)."""
        since = int(self.clock() * 1000)
        self.tokens[token.lower()] = _TokenEntry(state, topic, since)

    def reset(self) -> None:
        with self._lock:
            self.deliveries.clear()
            self.inbox.clear()
            self.attempts.clear()
            self.delivered_count = 0
        self.faults.clear()

    # -- handling -----------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Action | asyncio.Future[Response | Action]:
        if request.path.startswith("/_emulator/"):
            return self._admin.handle(request)
        if self.fast:
            return self._fast(request)
        token = (
            request.path.removeprefix("/3/device/") if request.path.startswith("/3/device/") else ""
        )
        fault = self.faults.take(token.lower()) if self.faults else None
        if fault is not None and fault.delays:
            return asyncio.ensure_future(self._later(request, fault))
        return self._answer(request, fault)

    async def _later(self, request: Request, fault: Fault) -> Response | Action:
        await fault.wait()
        return self._answer(request, fault)

    def _fast(self, request: Request) -> Response:
        # Benchmarks: no verification, but still count what arrived (and when, for lateness)
        # and echo the id.
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4())
        with self._lock:
            self.delivered_count += 1
            self.deliveries.append(
                ApnsDelivery(
                    request.path[10:],
                    apns_id,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    id(request.connection),
                    self.clock(),
                )
            )
        if request.connection.state.get("raised") is None:
            request.connection.state["raised"] = True
            request.connection.update_max_streams(STREAMS_AFTER_AUTH)
        return Response(200, [("apns-id", apns_id)])

    def _answer(self, request: Request, fault: Fault | None) -> Response | Action:
        headers = request.headers
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        token = ""

        def error(
            status: int,
            reason: str,
            extra: dict[str, object] | None = None,
            retry_after: str | None = None,
        ) -> Response:
            body: dict[str, object] = {"reason": reason, **(extra or {})}
            out = [("apns-id", apns_id.lower()), ("content-type", "application/json")]
            if retry_after is not None:
                out.append(("retry-after", retry_after))
            self._record_attempt(request, token, apns_id, status, reason)
            return Response(status, out, json.dumps(body).encode())

        if request.method != "POST":
            return error(405, "MethodNotAllowed")
        if not request.path.startswith("/3/device/"):
            return error(404, "BadPath")
        token = request.path.removeprefix("/3/device/")
        if fault is not None:
            if fault.action is not None:
                self._record_attempt(request, token, apns_id, 0, fault.action)
                return Action(fault.action)
            if fault.status is not None:
                extra: dict[str, object] = {}
                if fault.status == 410:
                    extra["timestamp"] = int(self.clock() * 1000)
                return error(
                    fault.status, fault.reason or "InternalServerError", extra, fault.retry_after
                )
        if not token:
            return error(400, "MissingDeviceToken")
        if "apns-id" in headers and not _UUID_RE.match(headers["apns-id"]):
            return error(400, "BadMessageId")
        auth_error = self._check_auth(request)
        if auth_error is not None:
            status, reason = auth_error
            return error(status, reason)
        topic = headers.get("apns-topic")
        push_type = headers.get("apns-push-type")
        if not topic:
            return error(400, "MissingTopic")
        if push_type is None or push_type not in PUSH_TYPES:
            return error(400, "InvalidPushType")
        bundle = topic.removesuffix(".voip")
        if (push_type == "voip") != topic.endswith(".voip"):
            return error(400, "BadTopic" if push_type == "voip" else "InvalidPushType")
        if self.bundle_ids and bundle not in self.bundle_ids:
            return error(400, "TopicDisallowed")
        priority = headers.get("apns-priority")
        if priority is not None and priority not in ("1", "5", "10"):
            return error(400, "BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return error(400, "BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            return error(400, "BadCollapseId")
        if not request.body:
            return error(400, "PayloadEmpty")
        limit = VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT
        if len(request.body) > limit:
            return error(413, "PayloadTooLarge")
        if not _TOKEN_RE.match(token):
            return error(400, "BadDeviceToken")
        entry = self.tokens.get(token.lower())
        if entry is not None:
            if entry.state == "bad":
                return error(400, "BadDeviceToken")
            if entry.state == "unregistered":
                return error(410, "Unregistered", {"timestamp": entry.since_ms})
            if entry.state == "expired":
                return error(410, "ExpiredToken", {"timestamp": entry.since_ms})
            if entry.topic is not None and entry.topic != bundle:
                return error(400, "DeviceTokenNotForTopic")
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        with self._lock:
            self.delivered_count += 1
            delivery = ApnsDelivery(
                token=token.lower(),
                apns_id=apns_id.lower(),
                topic=topic,
                push_type=push_type,
                priority=priority,
                expiration=expiration,
                collapse_id=collapse_id,
                payload=payload if isinstance(payload, dict) else None,
                key_id=request.connection.state.get("kid"),  # type: ignore[arg-type]
                connection=id(request.connection),
                received_at=self.clock(),
            )
            self.deliveries.append(delivery)
        # The device's PushKit connection: handed over as it is accepted.
        self.inbox.put(token, {"provider": "apns", **delivery.__dict__})
        self._record_attempt(request, token, apns_id, 200, None)
        if not request.connection.state.get("raised"):
            request.connection.state["raised"] = True
            request.connection.update_max_streams(STREAMS_AFTER_AUTH)
        return Response(200, [("apns-id", apns_id.lower())])

    def _record_attempt(
        self, request: Request, token: str, apns_id: str, status: int, reason: str | None
    ) -> None:
        with self._lock:
            self.attempts.append(
                ApnsAttempt(
                    token.lower(),
                    apns_id.lower(),
                    status,
                    reason,
                    request.headers.get("authorization"),
                    id(request.connection),
                    self.clock(),
                )
            )

    def _check_auth(self, request: Request) -> tuple[int, str] | None:
        header = request.headers.get("authorization")
        if not header:
            return 403, "MissingProviderToken"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "MissingProviderToken"
        try:
            head = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        key = self.keys.get(str(head.get("kid")))
        if head.get("alg") != "ES256" or key is None:
            return 403, "InvalidProviderToken"
        iat = key.verified.get(token)
        if iat is None:
            try:
                claims = jwt.decode(
                    token,
                    key.public_key,
                    algorithms=["ES256"],
                    options={"require": ["iss", "iat"], "verify_iat": False},
                )
            except jwt.PyJWTError:
                return 403, "InvalidProviderToken"
            if claims.get("iss") != key.team_id or not isinstance(claims.get("iat"), int):
                return 403, "InvalidProviderToken"
            iat = int(claims["iat"])
            key.verified[token] = iat
        now = self.clock()
        if iat > now + 60:
            return 403, "InvalidProviderToken"
        if now - iat > TOKEN_MAX_AGE_S:
            return 403, "ExpiredProviderToken"
        state = request.connection.state
        current = state.get("token")
        if current != token:
            changed_at = state.get("token_since")
            if (
                current is not None
                and isinstance(changed_at, float)
                and now - changed_at < TOKEN_MIN_UPDATE_INTERVAL_S
            ):
                return 429, "TooManyProviderTokenUpdates"
            state["token"] = token
            state["token_since"] = now
            state["kid"] = head.get("kid")
        return None

    # -- admin ----------------------------------------------------------------------------
    def _deliveries(self) -> dict[str, object]:
        with self._lock:
            out = [d.__dict__ for d in self.deliveries]
        return {"count": self.delivered_count, "deliveries": out}

    def _set_token_json(self, body: dict[str, object]) -> dict[str, object]:
        token, state, topic = body.get("token"), body.get("state", "valid"), body.get("topic")
        if not isinstance(token, str) or state not in ("valid", "unregistered", "expired", "bad"):
            raise ValueError("token must be a string; state valid|unregistered|expired|bad")
        self.set_token(token, state, topic if isinstance(topic, str) else None)
        return {"token": token, "state": state}
