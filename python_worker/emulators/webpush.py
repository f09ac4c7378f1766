"""A Web Push service emulator: what a browser's push service does with a family alert.

    POST /push/<subscription id>     the endpoint of one browser subscription

Checked as a push service checks it (RFC 8030, RFC 8292, RFC 8291 over RFC 8188):

- `Authorization: vapid t=<JWT>, k=<key>`: the JWT is ES256, signed by the key `k` (a
  base64url uncompressed P-256 point); `aud` is the endpoint's origin; `exp` is in the future
  and at most 24 h ahead; `sub` is a `mailto:` or `https:` URL. Anything else: 401 (missing
  or bad signature) or 403 (claims);
- `TTL` present (400 without), `Urgency` one of RFC 8030's, `Topic` at most 32 base64url
  characters, `Content-Encoding: aes128gcm`, a body of at most 4096 bytes (413);
- the body is decrypted with the subscription's private key and auth secret, as the browser
  would: the sender's public key from the aes128gcm header, ECDH, HKDF, AES-128-GCM. A body
  that does not decrypt is 400.

A message that passes is answered 201 with a `Location` and put in the subscription's inbox
(GET /_emulator/inbox?token=<subscription id>, the dashboard's stand-in reads it there).
Faults (POST /_emulator/faults with the subscription id as `token`) answer 404/410/413/429 as
configured; POST /_emulator/tokens {"token": id, "state": "gone"} makes it 410 for good.
Subscriptions are made as a browser makes them: POST /_emulator/subscriptions answers
`PushSubscription.toJSON()` (`endpoint`, `expirationTime`, `keys.p256dh`, `keys.auth`).

The decryption is written here from the RFCs, not taken from the sender's library, so the
emulator checks the sender rather than agreeing with it by construction.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from python_worker.emulators.admin import AdminRoutes, json_response
from python_worker.emulators.faults import Faults
from python_worker.emulators.inbox import Inbox
from python_worker.emulators.server import Request, Response

PUSH_PATH = "/push/"
#: RFC 8030: a push service must accept at least 4096 bytes of body.
MAX_BODY = 4096
#: RFC 8292 section 2: a push service may reject an `exp` more than 24 h ahead.
MAX_EXP_S = 24 * 3600
URGENCIES = ("very-low", "low", "normal", "high")
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def b64url_decode(value: str) -> bytes:
    """base64url without padding, as Web Push writes every key."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushRefused(Exception):
    """A request the push service answers with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Subscription:
    """One browser subscription: the keys only the browser (here, the emulator) holds."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    gone: bool = False

    @property
    def p256dh(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt_aes128gcm(body: bytes, subscription: Subscription) -> bytes:
    """RFC 8291 section 3 and RFC 8188: the plaintext the browser would hand the page."""
    if len(body) < 21:
        raise PushRefused(400, "body shorter than the aes128gcm header")
    salt = body[:16]
    (record_size,) = struct.unpack("!I", body[16:20])
    id_length = body[20]
    if id_length != 65:
        raise PushRefused(400, "aes128gcm keyid must be the sender's 65-byte public key")
    sender_public = body[21 : 21 + 65]
    ciphertext = body[21 + 65 :]
    if record_size < 18 or len(ciphertext) > record_size:
        raise PushRefused(400, "aes128gcm: a single record of at most the record size")
    try:
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
    except ValueError:
        raise PushRefused(400, "aes128gcm keyid is not a P-256 point") from None
    shared = subscription.private_key.exchange(ec.ECDH(), sender)
    key_info = b"WebPush: info\x00" + subscription.p256dh + sender_public
    ikm = _hkdf(subscription.auth, shared, key_info, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)  # record 0: seq xor is a no-op
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except Exception:
        raise PushRefused(400, "aes128gcm: the record does not decrypt with these keys") from None
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != 2:
        raise PushRefused(400, "aes128gcm: the last record must end with the 0x02 delimiter")
    return stripped[:-1]


def parse_vapid(header: str) -> tuple[str, bytes]:
    """`vapid t=<jwt>, k=<key>` (RFC 8292 section 3): the token and the raw public key."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "vapid":
        raise PushRefused(401, "Authorization must use the vapid scheme (RFC 8292)")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        params[name.strip().lower()] = value.strip()
    if "t" not in params or "k" not in params:
        raise PushRefused(401, "vapid: both t= and k= are required")
    try:
        key = b64url_decode(params["k"])
    except (binascii.Error, ValueError):
        raise PushRefused(401, "vapid: k is not base64url") from None
    return params["t"], key


def check_vapid(header: str | None, origin: str, now: float) -> dict[str, object]:
    """The JWT's claims, once its signature and claims pass RFC 8292's rules."""
    if not header:
        raise PushRefused(401, "missing Authorization: vapid t=..., k=...")
    token, raw_key = parse_vapid(header)
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
    except ValueError:
        raise PushRefused(401, "vapid: k is not an uncompressed P-256 point") from None
    try:
        head = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise PushRefused(401, "vapid: t is not a JWT") from None
    if head.get("alg") != "ES256":
        raise PushRefused(401, "vapid: the JWT must be ES256")
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            public,
            algorithms=["ES256"],
            options={"verify_aud": False, "verify_exp": False, "require": ["aud", "exp", "sub"]},
        )
    except jwt.MissingRequiredClaimError as error:
        raise PushRefused(403, f"vapid: the JWT needs {error.claim}") from None
    except jwt.PyJWTError:
        raise PushRefused(401, "vapid: the JWT's signature does not verify with k") from None
    if claims.get("aud") != origin:
        raise PushRefused(403, f"vapid: aud must be the endpoint's origin {origin}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise PushRefused(403, "vapid: the JWT has expired")
    if exp > now + MAX_EXP_S:
        raise PushRefused(403, "vapid: exp is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise PushRefused(403, "vapid: sub must be a mailto: or https: URL")
    return claims


@dataclass
class WebPushEmulator:
    """Subscriptions, their inboxes and the push endpoint."""

    #: The origin the endpoints are published under (`https://localhost:<port>`), set on start.
    origin: str = ""
    faults: Faults = field(default_factory=Faults)
    inbox: Inbox = field(default_factory=Inbox)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.admin = AdminRoutes(
            self.faults, self._deliveries, self._set_token, self._reset, inbox=self.inbox
        )

    def new_subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives the page: endpoint and public keys."""
        subscription = Subscription(
            id=uuid.uuid4().hex,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=secrets.token_bytes(16),
        )
        self.subscriptions[subscription.id] = subscription
        return {
            "endpoint": f"{self.origin}{PUSH_PATH}{subscription.id}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(subscription.p256dh), "auth": b64url(subscription.auth)},
        }

    def handle(self, request: Request) -> object:
        path = urlsplit(request.path).path
        if path == "/_emulator/subscriptions" and request.method == "POST":
            # {"count": n} makes n at once (benchmarks); otherwise one, as a browser does.
            try:
                count = int(json.loads(request.body or b"{}").get("count", 0))
            except (ValueError, AttributeError):
                return json_response(400, {"error": "count must be an integer"})
            if count:
                made = [self.new_subscription() for _ in range(min(count, 100_000))]
                return json_response(201, {"subscriptions": made})
            return json_response(201, self.new_subscription())
        if path.startswith("/_emulator/"):
            return self.admin.handle(request)
        if request.method != "POST" or not path.startswith(PUSH_PATH):
            return json_response(404, {"error": f"no route {request.method} {path}"})
        subscription_id = path.removeprefix(PUSH_PATH)
        try:
            return self._push(subscription_id, request)
        except PushRefused as refused:
            key = str(refused.status)
            self.refused[key] = self.refused.get(key, 0) + 1
            return json_response(refused.status, {"error": refused.reason})

    def _push(self, subscription_id: str, request: Request) -> Response:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise PushRefused(404, "no such subscription")
        now = time.time()
        claims = check_vapid(request.headers.get("authorization"), self.origin, now)
        fault = self.faults.take(subscription_id)
        if fault is not None and fault.status is not None:
            headers = [("content-type", "application/json")]
            if fault.retry_after is not None:
                headers.append(("retry-after", fault.retry_after))
            body = json.dumps({"error": fault.reason or "injected"}).encode()
            self.refused[str(fault.status)] = self.refused.get(str(fault.status), 0) + 1
            return Response(fault.status, headers, body)
        if subscription.gone:
            raise PushRefused(410, "the subscription has expired or been unsubscribed")
        ttl = request.headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            raise PushRefused(400, "TTL header: required, seconds (RFC 8030 section 5.2)")
        urgency = request.headers.get("urgency", "normal")
        if urgency not in URGENCIES:
            raise PushRefused(400, f"Urgency must be one of {', '.join(URGENCIES)}")
        topic = request.headers.get("topic")
        if topic is not None and not TOPIC.match(topic):
            raise PushRefused(400, "Topic: at most 32 base64url characters")
        if request.headers.get("content-encoding") != "aes128gcm":
            raise PushRefused(400, "Content-Encoding must be aes128gcm (RFC 8291)")
        if len(request.body) > MAX_BODY:
            raise PushRefused(413, f"body over {MAX_BODY} bytes")
        plaintext = decrypt_aes128gcm(request.body, subscription)
        try:
            payload: object = json.loads(plaintext)
        except ValueError:
            payload = plaintext.decode("utf-8", "replace")
        message_id = uuid.uuid4().hex
        self.accepted += 1
        self.inbox.put(
            subscription_id,
            {
                "message_id": message_id,
                "payload": payload,
                "ttl": int(ttl),
                "urgency": urgency,
                "topic": topic,
                "vapid_sub": claims.get("sub"),
                "received_at": now,
            },
        )
        return Response(201, [("location", f"{self.origin}/message/{message_id}")])

    def _deliveries(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "deliveries": self.inbox.received(),
        }

    def _set_token(self, body: dict[str, object]) -> dict[str, object]:
        token, state = body.get("token"), body.get("state")
        if not isinstance(token, str) or token not in self.subscriptions:
            raise ValueError("token: a subscription id this emulator issued")
        if state not in ("gone", "active"):
            raise ValueError("state must be 'gone' or 'active'")
        self.subscriptions[token].gone = state == "gone"
        return {"token": token, "state": state}

    def _reset(self) -> None:
        self.inbox.clear()
        self.faults.clear()
        self.accepted = 0
        self.refused.clear()
