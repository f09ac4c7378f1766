"""FCM emulator: Google's OAuth token endpoint and FCM HTTP v1 `messages:send`.

- `POST /token`: the service-account JWT bearer grant google-auth makes. The RS256 assertion is
  verified against the registered service account's public key (by `kid` and `iss`), with
  `aud` = https://oauth2.googleapis.com/token, a scope that includes firebase.messaging and a
  lifetime of at most an hour. It issues opaque access tokens that expire.
- `POST /v1/projects/{project}/messages:send`: checks the access token (401 UNAUTHENTICATED
  without FcmError detail when missing, unknown or expired), the project, and the message
  exactly as PROTOCOLS.md states (one target, data map of strings, reserved keys, 4096-byte
  data limit, Android priority and TTL, snake_case or camelCase names, unknown names rejected).
  Answers use FCM's real success and error shapes, FcmError details included.
- A token registry: a registration token can be valid, unregistered (404 UNREGISTERED) or
  belong to another sender (403 SENDER_ID_MISMATCH).

Served over HTTP/2 and HTTP/1.1 (google-auth fetches tokens with requests, HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from python_worker.emulators.admin import AdminRoutes
from python_worker.emulators.faults import Fault, Faults
from python_worker.emulators.inbox import Inbox
from python_worker.emulators.server import Action, Request, Response

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# Google accepts any of these for FCM sends (firebase-admin asks for cloud-platform + firebase).
FCM_SCOPES = frozenset(
    {
        FCM_SCOPE,
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/firebase",
    }
)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
DATA_LIMIT = 4096
# Faults registered under this key apply to the OAuth token endpoint instead of a send.
OAUTH_FAULT_KEY = "oauth"
MAX_TTL_S = 2_419_200
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_TTL = re.compile(r"^(\d+)(\.\d{1,9})?s$")
_REG_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{32,4096}$")

# errorCode -> (HTTP status, google.rpc status, message), as FCM answers them.
ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'.",
    ),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}

_MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}
_ANDROID_FIELDS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
    "bandwidth_constrained_ok",
    "restricted_satellite_ok",
}
_RESERVED_KEYS = {"from", "message_type"}
_RESERVED_PREFIXES = ("google", "gcm")

PublicKey = RSAPublicKey | EllipticCurvePublicKey
TokenState = Literal["valid", "unregistered", "other_sender"]


def snake(name: str) -> str:
    """camelCase -> snake_case, as the proto JSON parser accepts both."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


class InvalidMessage(ValueError):
    """A message FCM rejects with INVALID_ARGUMENT; `field` is the violated field path."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


@dataclass
class FcmDelivery:
    """A message FCM accepted."""

    token: str
    message_id: str
    data: dict[str, str]
    android: dict[str, object]
    http_version: str
    received_at: float
    #: The message's `notification` block, if any (a phone shows it beside what the app does).
    notification: dict[str, object] | None = None


@dataclass
class _Account:
    project_id: str
    key_id: str
    public_key: PublicKey


@dataclass
class _AccessToken:
    project_id: str
    client_email: str
    expires_at: float


def validate_message(message: object) -> tuple[str, dict[str, str], dict[str, object]]:
    """Check a v1 message; return (token, data, android). Raises InvalidMessage."""
    if not isinstance(message, dict):
        raise InvalidMessage("message", "message must be an object")
    fields = {snake(k): v for k, v in message.items()}
    for name in fields:
        if name not in _MESSAGE_FIELDS:
            raise InvalidMessage(
                "message", f"Invalid JSON payload received. Unknown name \"{name}\" at 'message'"
            )
    targets = [t for t in ("token", "topic", "condition") if fields.get(t) not in (None, "")]
    if len(targets) != 1:
        raise InvalidMessage("message", "Exactly one of token, topic or condition must be set")
    token = fields.get("token")
    if targets == ["token"] and (not isinstance(token, str) or not _REG_TOKEN.match(token)):
        raise InvalidMessage(
            "message.token", "The registration token is not a valid FCM registration token"
        )
    data = fields.get("data") or {}
    if not isinstance(data, dict):
        raise InvalidMessage("message.data", "data must be a map of string to string")
    size = 0
    for key, value in data.items():
        if not isinstance(value, str):
            raise InvalidMessage(
                f"message.data[{key}]",
                f"Invalid value at 'message.data[{key}].value' (TYPE_STRING), {json.dumps(value)}",
            )
        low = key.lower()
        if low in _RESERVED_KEYS or low.startswith(_RESERVED_PREFIXES):
            raise InvalidMessage(
                f"message.data[{key}]", f"Invalid data key: {key} is a reserved word"
            )
        size += len(key.encode()) + len(value.encode())
    if size > DATA_LIMIT:
        raise InvalidMessage(
            "message.data", f"Android message is too big ({size} bytes of data > {DATA_LIMIT})"
        )
    android = fields.get("android") or {}
    if not isinstance(android, dict):
        raise InvalidMessage("message.android", "android must be an object")
    android = {snake(k): v for k, v in android.items()}
    for name in android:
        if name not in _ANDROID_FIELDS:
            raise InvalidMessage(
                "message.android",
                f"Invalid JSON payload received. Unknown name \"{name}\" at 'message.android'",
            )
    priority = android.get("priority")
    if priority is not None and (
        not isinstance(priority, str) or priority.lower() not in ("high", "normal")
    ):
        raise InvalidMessage(
            "message.android.priority", f"Invalid value at 'message.android.priority': {priority!r}"
        )
    ttl = android.get("ttl")
    if ttl is not None:
        match = _TTL.match(ttl) if isinstance(ttl, str) else None
        if match is None or int(match.group(1)) > MAX_TTL_S:
            raise InvalidMessage(
                "message.android.ttl",
                f"Invalid value at 'message.android.ttl' ({ttl!r}): "
                f'a duration like "30s" between 0 and {MAX_TTL_S}s',
            )
    android_data = android.get("data")
    if android_data is not None and (
        not isinstance(android_data, dict)
        or not all(isinstance(v, str) for v in android_data.values())
    ):
        raise InvalidMessage(
            "message.android.data", "android.data must be a map of string to string"
        )
    return (token if isinstance(token, str) else ""), data, android


def _notification(message: dict[str, object]) -> dict[str, object] | None:
    """The message's notification block (top level or `android.notification`), if any."""
    android = message.get("android")
    block = message.get("notification") or (
        android.get("notification") if isinstance(android, dict) else None
    )
    return dict(block) if isinstance(block, dict) else None


class FcmEmulator:
    """The FCM + OAuth handler. Serve it with `HttpServer(emulator.handle, ...)`."""

    def __init__(
        self,
        *,
        fast: bool = False,
        token_lifetime_s: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fast = fast
        self.token_lifetime_s = token_lifetime_s
        self.clock = clock
        self.accounts: dict[str, _Account] = {}
        self.access_tokens: dict[str, _AccessToken] = {}
        self.tokens: dict[str, TokenState] = {}
        self.faults = Faults()
        self.deliveries: list[FcmDelivery] = []
        self.token_requests = 0
        self.send_requests = 0
        self.delivered_count = 0
        self._ids = itertools.count(1_500_000_000_000_000)
        self.inbox = Inbox()
        self._admin = AdminRoutes(
            self.faults, self._deliveries, self._set_token_json, self.reset, inbox=self.inbox
        )
        self._lock = threading.Lock()

    def add_service_account(
        self, client_email: str, project_id: str, key_id: str, public_key_pem: bytes
    ) -> None:
        """Accept OAuth assertions signed by this service account's key."""
        key = load_pem_public_key(public_key_pem)
        if not isinstance(key, RSAPublicKey):
            raise ValueError("a service account key must be an RSA key")
        self.accounts[client_email] = _Account(project_id, key_id, key)

    def set_token(self, token: str, state: TokenState = "valid") -> None:
        self.tokens[token] = state

    def revoke_access_tokens(self) -> None:
        """Forget every issued access token (the next send gets a bare 401)."""
        self.access_tokens.clear()

    def reset(self) -> None:
        with self._lock:
            self.deliveries.clear()
            self.inbox.clear()
            self.delivered_count = 0
            self.token_requests = 0
            self.send_requests = 0
        self.faults.clear()

    # -- handling -------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Action | asyncio.Future[Response | Action]:
        path = request.path
        if path.startswith("/_emulator/"):
            return self._admin.handle(request)
        if path == "/token":
            fault = self.faults.take(OAUTH_FAULT_KEY, any_token=False) if self.faults else None
            if fault is not None:
                return asyncio.ensure_future(self._token_later(request, fault))
            return self._token(request)
        if self.fast:
            return self._fast(request)
        fault = None
        if self.faults:
            token = ""
            try:
                message = json.loads(request.body).get("message", {})
                token = str(message.get("token", ""))
            except (ValueError, AttributeError):
                pass
            fault = self.faults.take(token)
        if fault is not None and fault.delays:
            return asyncio.ensure_future(self._later(request, fault))
        return self._send(request, fault)

    async def _token_later(self, request: Request, fault: Fault) -> Response | Action:
        await fault.wait()
        if fault.action is not None:
            return Action(fault.action)
        if fault.status is not None:
            return _oauth_error(fault.status, fault.reason or "internal_failure", "injected fault")
        return self._token(request)

    async def _later(self, request: Request, fault: Fault) -> Response | Action:
        await fault.wait()
        return self._send(request, fault)

    def _fast(self, request: Request) -> Response:
        match = _SEND_PATH.match(request.path)
        message = json.loads(request.body)["message"]
        message_id = f"0:{next(self._ids)}"
        with self._lock:
            self.send_requests += 1
            self.delivered_count += 1
            self.deliveries.append(
                FcmDelivery(
                    message.get("token", ""), message_id, {}, {}, request.http_version, self.clock()
                )
            )
        project = match.group(1) if match else "unknown"
        return _json(200, {"name": f"projects/{project}/messages/{message_id}"})

    def _send(self, request: Request, fault: Fault | None) -> Response | Action:
        with self._lock:
            self.send_requests += 1
        match = _SEND_PATH.match(request.path)
        if match is None:
            return _google_error(
                404, "NOT_FOUND", f"The requested URL {request.path} was not found."
            )
        if request.method != "POST":
            return _google_error(405, "METHOD_NOT_ALLOWED", "Method not allowed.")
        project = match.group(1)
        if fault is not None:
            if fault.action is not None:
                return Action(fault.action)
            if fault.reason == "UNAUTHENTICATED" or (fault.status == 401 and fault.reason is None):
                return _unauthenticated()
            if fault.reason is not None or fault.status is not None:
                code = fault.reason or "INTERNAL"
                status, rpc_status, text = ERRORS.get(code, (fault.status or 500, "UNKNOWN", code))
                return _fcm_error(
                    fault.status or status, rpc_status, text, code, retry_after=fault.retry_after
                )
        auth = request.headers.get("authorization", "")
        scheme, _, access = auth.partition(" ")
        grant = self.access_tokens.get(access) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= self.clock():
            return _unauthenticated()
        if grant.project_id != project:
            return _google_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}'",
            )
        try:
            body = json.loads(request.body)
        except ValueError:
            return _bad_request("message", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return _bad_request("message", "Invalid JSON payload received.")
        body = {snake(k): v for k, v in body.items()}
        unknown = set(body) - {"message", "validate_only"}
        if unknown:
            return _bad_request(
                "message", f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}"'
            )
        validate_only = body.get("validate_only", False)
        if not isinstance(validate_only, bool):
            return _bad_request("validate_only", "validate_only must be a boolean")
        try:
            token, data, android = validate_message(body.get("message"))
        except InvalidMessage as problem:
            return _bad_request(problem.field, problem.description)
        state = self.tokens.get(token, "valid")
        if state == "unregistered":
            return _fcm_error(*ERRORS["UNREGISTERED"][:3], "UNREGISTERED")
        if state == "other_sender":
            return _fcm_error(*ERRORS["SENDER_ID_MISMATCH"][:3], "SENDER_ID_MISMATCH")
        message_id = f"0:{next(self._ids)}%{secrets.token_hex(8)}"
        if not validate_only:
            with self._lock:
                self.delivered_count += 1
                delivery = FcmDelivery(
                    token,
                    message_id,
                    data,
                    android,
                    request.http_version,
                    self.clock(),
                    _notification(body["message"]),
                )
                self.deliveries.append(delivery)
            # The device's connection to FCM: handed over as it is accepted.
            self.inbox.put(token, {"provider": "fcm", **delivery.__dict__})
        return _json(200, {"name": f"projects/{project}/messages/{message_id}"})

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "Method not allowed")
        form = urllib.parse.parse_qs(request.body.decode(errors="replace"))
        if form.get("grant_type") != [JWT_BEARER]:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type")
        assertion = (form.get("assertion") or [""])[0]
        try:
            head = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: malformed assertion")
        account = self.accounts.get(str(unverified.get("iss")))
        if account is None or head.get("alg") != "RS256" or head.get("kid") != account.key_id:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                options={
                    "require": ["iss", "aud", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            return _oauth_error(
                400, "invalid_grant", f"Invalid JWT: audience must be {GOOGLE_TOKEN_AUDIENCE}"
            )
        except jwt.PyJWTError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        now = self.clock()
        iat, exp = claims["iat"], claims["exp"]
        if (
            not (isinstance(iat, int) and isinstance(exp, int))
            or exp - iat > 3600
            or exp <= now
            or iat > now + 300
        ):
            return _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe.",
            )
        scopes = str(claims.get("scope", "")).split()
        if not FCM_SCOPES.intersection(scopes):
            return _oauth_error(400, "invalid_scope", f"the assertion must ask for {FCM_SCOPE}")
        access = "ya29.emu-" + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime_s
        self.access_tokens[access] = _AccessToken(
            account.project_id, str(claims["iss"]), now + lifetime
        )
        return _json(
            200, {"access_token": access, "expires_in": lifetime - 1, "token_type": "Bearer"}
        )

    # -- admin ------------------------------------------------------------------------------
    def _deliveries(self) -> dict[str, object]:
        with self._lock:
            out = [d.__dict__ for d in self.deliveries]
        return {
            "count": self.delivered_count,
            "token_requests": self.token_requests,
            "deliveries": out,
        }

    def _set_token_json(self, body: dict[str, object]) -> dict[str, object]:
        token, state = body.get("token"), body.get("state", "valid")
        if not isinstance(token, str) or state not in ("valid", "unregistered", "other_sender"):
            raise ValueError("token must be a string; state valid|unregistered|other_sender")
        self.set_token(token, state)
        return {"token": token, "state": state}


def _json(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        [("content-type", "application/json; charset=UTF-8"), *(headers or [])],
        json.dumps(body).encode(),
    )


def _google_error(
    status: int,
    rpc_status: str,
    message: str,
    details: list[dict[str, object]] | None = None,
    retry_after: str | None = None,
) -> Response:
    error: dict[str, object] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    headers = [("retry-after", retry_after)] if retry_after is not None else []
    return _json(status, {"error": error}, headers)


def _fcm_error(
    status: int,
    rpc_status: str,
    message: str,
    code: str,
    extra: list[dict[str, object]] | None = None,
    retry_after: str | None = None,
) -> Response:
    details: list[dict[str, object]] = [
        {"@type": FCM_ERROR_TYPE, "errorCode": code},
        *(extra or []),
    ]
    return _google_error(status, rpc_status, message, details, retry_after)


def _bad_request(field: str, description: str) -> Response:
    violation: dict[str, object] = {
        "@type": BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": field, "description": description}],
    }
    return _fcm_error(400, "INVALID_ARGUMENT", description, "INVALID_ARGUMENT", [violation])


def _unauthenticated() -> Response:
    return _google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    )


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})
