"""`callpanion api`: the HTTP routes of the phone app and of ElevenLabs (FastAPI, ASGI).

Routes read top to bottom as a call goes: the app pairs, keeps its push tokens current and
reports liveness; it reports call events (and gets a conversation token on `accepted`); after
the call ElevenLabs posts the signed transcript. Each route authenticates, validates, then
calls one SQL function (api/queries.sql); the logic and every state change are in SQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
import uvicorn
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from python_worker import __version__
from python_worker.api import metrics as api_metrics
from python_worker.api.alerts import alert_router
from python_worker.api.db import ApiDatabase, ApiError
from python_worker.api.elevenlabs import (
    SIGNATURE_HEADER,
    ConversationTokenClient,
    ElevenLabsUnavailable,
    SignatureError,
    SignatureHeader,
    WebhookPayloadError,
    json_problem,
    parse_signature_header,
    parse_webhook,
    without_audio,
)
from python_worker.api.rate_limit import SlidingWindowLimiter, client_key, trusted_networks
from python_worker.api.settings import ApiSettings, proxy_list
from python_worker.api.webhook_schema import WEBHOOK_BODY

WEBHOOK_PATH = "/v1/webhooks/elevenlabs"
log = logging.getLogger("callpanion.api")
#: A health check answers quickly, even when the database is away.
HEALTH_WAIT_SECS = 2.0
#: The device's upcoming calls: the default window, and the longest one (upcoming_calls').
UPCOMING_DEFAULT_SPAN = timedelta(days=7)
UPCOMING_MAX_SPAN = timedelta(days=62)
#: What a refused call event names: the contract of the updated app (docs/APP_MIGRATION.md).
EVENT_CONTRACT = (
    "the app reports {event, at} per call: delivered, accepted, connected (with"
    " conversation_id), ended; or declined, or timeout (docs/APP_MIGRATION.md)"
)
#: Conversation tokens per session are counted over this window (ElevenLabs' tokens last
#: about 10 minutes, and the connect window is shorter than that).
TOKEN_WINDOW_SECS = 600.0
#: Every other route takes a small JSON body.
MAX_REQUEST_BYTES = 64 * 1024
#: Compared against when the device does not exist, so that case costs the same work.
_NO_SUCH_SECRET_HASH = hashlib.sha256(b"no such device").hexdigest()

FCM_TOKEN_PATTERN = r"^[A-Za-z0-9_:\-]{32,4096}$"  # noqa: S105 - a pattern
#: Free text: not blank, no NUL character (Postgres text cannot hold one).
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
APNS_TOKEN_PATTERN = r"^[0-9A-Fa-f]{64}$"  # noqa: S105 - a pattern
#: What the dashboard shows beside the code; its exact form (8 Crockford base32 characters,
#: case, spaces and hyphens free) is checked in SQL (pair_device_by_reference).
REFERENCE_PATTERN = r"^[0-9A-Za-z \-]{8,16}$"
#: The label a device gets when the app sends none (the family may see it on the dashboard).
DEFAULT_LABELS = {"ios": "iPhone", "android": "Android phone"}


def _no_token_when_empty(value: object) -> object:
    """An empty token string is "no token": Android's `getDevicePushTokenVoIP()` answers ""."""
    return None if value == "" else value


#: A push token field: absent, null and "" all mean "no token".
Token = Annotated[str | None, BeforeValidator(_no_token_when_empty)]


# Bodies -------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every refusal: a message naming the field and the reason, and the field."""

    error: str
    field: str | None = None


class PairRequest(BaseModel):
    pairing_id: uuid.UUID | None = Field(
        default=None,
        description="which pairing: the id in the dashboard's QR code or link (or send"
        " `pairing_reference` instead, when the person types the code)",
    )
    pairing_reference: str | None = Field(
        default=None,
        pattern=REFERENCE_PATTERN,
        description="which pairing, typed: the 8 letters and digits the dashboard shows beside"
        " the code (for example ABCD-EFGH; case, spaces and hyphens do not matter)",
    )
    code: str = Field(pattern=r"^[0-9]{6}$", description="the 6 digits shown on the dashboard")
    platform: Literal["ios", "android"]
    fcm_token: Token = Field(default=None, pattern=FCM_TOKEN_PATTERN)
    voip_token: Token = Field(default=None, pattern=APNS_TOKEN_PATTERN, description="PushKit (iOS)")
    apns_token: Token = Field(default=None, pattern=APNS_TOKEN_PATTERN, description="APNs (iOS)")
    app_version: str | None = Field(default=None, min_length=1, max_length=50, pattern=TEXT_PATTERN)
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=TEXT_PATTERN,
        description='how the family sees the device (default "iPhone" / "Android phone")',
    )


class RelativeOut(BaseModel):
    id: uuid.UUID
    display_name: str
    timezone: str
    household_name: str


class PairResponse(BaseModel):
    device_id: uuid.UUID
    device_secret: str = Field(description="shown once; send `Bearer <device_id>.<secret>`")
    household_id: uuid.UUID = Field(
        description="store it: every call push carries it as `householdId`, to compare"
    )
    relative_id: uuid.UUID = Field(
        description="store it: every call push carries it as `relativeId`, to compare"
    )
    relative_name: str = Field(description="the relative's name, as the family wrote it")
    relative: RelativeOut


class UpcomingCall(BaseModel):
    """One occurrence of the relative's schedules (the dashboard's `upcoming_calls` row)."""

    schedule_id: uuid.UUID
    schedule_title: str | None
    occurrence_at: datetime = Field(description="when it rings (UTC)")
    local_time: datetime = Field(description="the wall-clock time in `timezone`")
    timezone: str
    call_session_id: uuid.UUID | None = Field(
        description="the CallKit id of its latest attempt, once queued (else null)"
    )
    attempt: int | None
    status: str | None = Field(description="the latest attempt's state, once queued (else null)")


class UpcomingCallsResponse(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    calls: list[UpcomingCall]


class TokensRequest(BaseModel):
    fcm_token: Token = Field(default=None, pattern=FCM_TOKEN_PATTERN)
    voip_token: Token = Field(default=None, pattern=APNS_TOKEN_PATTERN)
    apns_token: Token = Field(default=None, pattern=APNS_TOKEN_PATTERN)


class TokensResponse(BaseModel):
    fcm_token_valid: bool
    voip_token_valid: bool
    apns_token_valid: bool


class HeartbeatRequest(BaseModel):
    app_version: str | None = Field(default=None, min_length=1, max_length=50, pattern=TEXT_PATTERN)
    notification_permission: bool | None = None
    full_screen_intent_permission: bool | None = None


class HeartbeatResponse(BaseModel):
    last_seen_at: datetime


CallEvent = Literal["delivered", "accepted", "declined", "timeout", "connected", "ended"]


class CallEventRequest(BaseModel):
    event: CallEvent
    at: AwareDatetime = Field(description="when it happened on the device (with a UTC offset)")
    conversation_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_:.\-]{1,200}$",
        description=(
            "the ElevenLabs conversation id; required with `connected`, optional with `ended`"
            " (an app that never sends `connected` reports it there: the call then counts as"
            " connected and ended)"
        ),
    )


class ConversationStart(BaseModel):
    """What the app needs to start the ElevenLabs conversation (on `accepted`)."""

    token: str = Field(description="WebRTC conversation token, valid about 10 minutes")
    agent_id: str
    dynamic_variables: dict[str, str]


class CallEventResponse(BaseModel):
    session_id: uuid.UUID
    event: CallEvent
    status: str
    changed: bool = Field(description="false when the event was a repeat (nothing changed)")
    conversation: ConversationStart | None = None


class WebhookAck(BaseModel):
    event_id: uuid.UUID
    status: str = Field(
        description="processed, unmatched, ignored, superseded (an older report than the one"
        " applied: stored, changes nothing) or failed (kept for replay)"
    )
    duplicate: bool
    call_session_id: uuid.UUID | None = None


class Health(BaseModel):
    status: str
    database: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


# Body size limit ----

#: A webhook body is kept in memory up to this size, and beyond it in a temporary file, while
#: its signature is not yet known to match: memory stays bounded under a flood of large
#: unsigned posts.
SPOOL_MEMORY_BYTES = 256 * 1024


#: Received chunks are hashed and spooled in batches of this size, in a worker thread
#: (hashlib and file writes release the GIL), so the event loop only collects them.
HASH_BATCH_BYTES = 1024 * 1024
#: Threads hashing webhook bodies at once: few, and not the pool the routes run in.
_HASHERS = anyio.CapacityLimiter(2)


class SpooledBody:
    """A request body being read: fed to the HMAC and kept (memory, then disk) as it comes."""

    def __init__(self, mac: hmac.HMAC) -> None:
        self.mac = mac
        self.size = 0
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        self._batch: list[bytes] = []
        self._batched = 0

    async def add(self, chunk: bytes, limit: int) -> bool:
        """Take one chunk; False (and nothing more kept) once the body is over `limit`."""
        self.size += len(chunk)
        if self.size > limit:
            return False
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= HASH_BATCH_BYTES:
            await self.flush()
        return True

    async def flush(self) -> None:
        """Hash and spool what was collected so far (off the event loop)."""
        if self._batch:
            data, self._batch, self._batched = b"".join(self._batch), [], 0
            await anyio.to_thread.run_sync(self._take, data, limiter=_HASHERS)

    def _take(self, data: bytes) -> None:
        self.mac.update(data)
        self._file.write(data)

    def read(self) -> bytes:
        """The whole body (once its signature matched)."""
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse bodies over the limit with 413 before the app sees them.

    The body is read here (up to the limit) and replayed to the app, so an oversize body is
    refused whether or not it announced its length. Paths in `streamed` are not buffered: only
    a declared length over their limit is refused here, and the route reads the body itself,
    as a stream, within the same limit (the webhook: its signature header is checked before
    a byte of the body is read).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        on_refused: Callable[[str], None],
        streamed: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.on_refused = on_refused
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limit_for(path)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > limit
        if path in self.streamed and not too_large:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = not too_large
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_large:
            await run_in_threadpool(self.on_refused, path)
            await too_large_response(limit)(scope, receive, send)
            return
        body = b"".join(chunks)
        # Kept for the refusal of a body FastAPI cannot decode: it then says why.
        scope.setdefault("state", {})["raw_body"] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def too_large_response(limit: int) -> JSONResponse:
    """413 in the README's shape."""
    return JSONResponse(
        {"error": f"body: larger than the limit of {limit} bytes", "field": "body"},
        status_code=413,
    )


# The app ------------------------------------------------------------------------------------


def undecodable(request: Request) -> str:
    """Why the buffered body of this request could not be read as JSON."""
    raw = getattr(request.state, "raw_body", None)
    if not isinstance(raw, bytes):
        return "is not valid JSON in UTF-8"
    try:
        json.loads(raw)
    except (ValueError, RecursionError) as error:
        return json_problem(error)
    return "is not valid JSON in UTF-8"


def hash_secret(secret: str) -> str:
    """How a device secret is stored: a hex SHA-256 (the secret is 256 random bits)."""
    return hashlib.sha256(secret.encode()).hexdigest()


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="DeviceBearer",
    description="`Bearer <device_id>.<device_secret>` as returned by pairing",
)


def authenticated_device(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> uuid.UUID:
    """The device making the request, or 401. The same answer for an unknown device and a
    wrong secret; "revoked" is only said to a caller who holds the right secret."""
    db: ApiDatabase = request.app.state.database
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401,
            "authorization: send Bearer <device_id>.<device_secret>",
            "authorization",
            challenge,
        )
    device_part, _, secret = credentials.credentials.partition(".")
    try:
        device_id = uuid.UUID(device_part)
    except ValueError:
        device_id = None
    rows = db.rows("device_credentials", {"device_id": device_id}) if device_id else []
    stored = rows[0]["secret_hash"] if rows and rows[0]["secret_hash"] else None
    matches = hmac.compare_digest(hash_secret(secret), stored or _NO_SUCH_SECRET_HASH)
    if not (matches and stored and secret and device_id):
        raise ApiError(401, "authorization: invalid device credentials", "authorization", challenge)
    if rows[0]["status"] != "active":
        raise ApiError(
            401, "authorization: this device has been revoked; pair again", "authorization",
            challenge,
        )  # fmt: skip
    return device_id


Device = Annotated[uuid.UUID, Depends(authenticated_device)]


def _with_contract(refused: ApiError) -> ApiError:
    """A 409 (an event the state does not allow) names the event contract; others as they are."""
    if refused.status != 409:
        return refused
    return ApiError(409, f"{refused.message}; {EVENT_CONTRACT}", refused.field, refused.headers)


def create_app(
    settings: ApiSettings,
    *,
    database: ApiDatabase | None = None,
    token_client: ConversationTokenClient | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The ASGI app. The database pool opens with the app's lifespan (not for `--openapi`)."""
    db = database or ApiDatabase(settings.database_url, settings.db_role)
    if token_client is None and settings.elevenlabs_api_key:
        token_client = ConversationTokenClient(
            settings.elevenlabs_base_url, settings.elevenlabs_api_key
        )
    limiter = SlidingWindowLimiter(settings.pairing_rate_limit, settings.pairing_rate_window_secs)
    proxies = trusted_networks(proxy_list(settings.trusted_proxies))
    # A repeated `accepted` mints a fresh token; this many per session per connect window.
    token_limiter = SlidingWindowLimiter(
        settings.conversation_tokens_per_session, TOKEN_WINDOW_SECS
    )
    concern_fields = list(settings.concern_fields)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        db.open()
        try:
            yield
        finally:
            db.close()
            if token_client is not None:
                token_client.close()

    app = FastAPI(
        title="CallPanion API",
        version=__version__,
        description=(
            "Device pairing, call events and ElevenLabs conversation tokens for the relative's "
            "app, and the signed ElevenLabs post-call webhook. Errors are "
            '`{"error": "<field>: <reason>", "field": "<field>"}`.'
        ),
        lifespan=lifespan,
        # The API's own description is not served to anyone unless a setting says so.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.database = db
    app.state.metrics = api_metrics.install(app)

    def count_rejection(reason: str) -> None:
        # The refusal stands even when the counter cannot be written.
        with contextlib.suppress(ApiError):
            db.rows("count_webhook_rejection", {"reason": reason})

    def limit_for(path: str) -> int:
        return settings.webhook_max_bytes if path == WEBHOOK_PATH else MAX_REQUEST_BYTES

    def body_refused(path: str) -> None:
        if path == WEBHOOK_PATH:
            count_rejection("too_large")

    app.add_middleware(
        BodyLimit,
        limit_for=limit_for,
        on_refused=body_refused,
        streamed=frozenset({WEBHOOK_PATH}),
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return JSONResponse(
            {"error": error.message, "field": error.field},
            status_code=error.status,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = []
        for item in error.errors():
            loc = [str(part) for part in item.get("loc", ())]
            field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else "body")
            reason = str(item.get("msg", "is invalid"))
            if item.get("type") == "json_invalid":
                field, reason = "body", undecodable(request)
            problems.append({"field": field, "reason": reason})
        first = problems[0] if problems else {"field": "body", "reason": "is invalid"}
        message = f"{first['field']}: {first['reason']}"
        if request.url.path.startswith("/v1/calls/"):
            message += f"; {EVENT_CONTRACT}"  # an old app's {status, action} lands here
        return JSONResponse(
            {
                "error": message,
                "field": first["field"],
                "errors": problems,
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 400:
            # FastAPI's answer to a body it cannot decode: one shape for every invalid input,
            # with the reason (too deep, a number too long, not UTF-8), never the parser's text.
            return JSONResponse(
                {"error": f"body: {undecodable(request)}", "field": "body"}, status_code=422
            )
        # The framework's own refusals, in the README's shape too: name what was wrong.
        field, reason = None, str(error.detail)
        if error.status_code == 404:
            field, reason = "path", f"no route {request.url.path}"
        elif error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            field = "method"
            reason = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
        return JSONResponse(
            {"error": f"{field}: {reason}" if field else reason, "field": field},
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # Whatever went wrong is logged; the client is told nothing about the internals.
        log.error(
            "unhandled error",
            extra={"path": request.url.path, "error": type(error).__name__},
            exc_info=error,
        )
        return JSONResponse(
            {"error": "server: an internal error; try again later", "field": "server"},
            status_code=500,
        )

    @app.get("/healthz", response_model=Health, responses=_errors(503))
    def healthz() -> Health | JSONResponse:
        """Liveness and whether the database answers."""
        try:
            db.rows("ping", {}, wait=HEALTH_WAIT_SECS)
        except ApiError:
            return JSONResponse({"status": "degraded", "database": "unavailable"}, 503)
        return Health(status="ok", database="ok")

    @app.post(
        "/v1/devices/pair",
        status_code=201,
        response_model=PairResponse,
        responses=_errors(403, 413, 422, 429, 503),
        tags=["device"],
    )
    def pair(body: PairRequest, request: Request) -> PairResponse:
        """Claim the code of one pairing: `pairing_id` and `code` from the QR code or link, or
        `pairing_reference` and `code` as typed from the dashboard. The device secret is
        returned once. Pairing revokes the relative's earlier device. A wrong, expired or
        locked code, or an unknown pairing, gets one and the same 403; a code is locked after
        5 wrong attempts. 429 with Retry-After: too many requests
        from this address, or the pairing's household (or the pool for unknown pairings) has
        spent its guess budget."""
        if (body.pairing_id is None) == (body.pairing_reference is None):
            raise ApiError(
                422,
                "pairing_id: send exactly one of pairing_id (from the QR code or link) and"
                " pairing_reference (typed from the dashboard, beside the code)",
                "pairing_id",
            )
        address = client_key(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            proxies,
        )
        wait = limiter.hit(address)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"code: too many pairing attempts from this address; try again in {seconds} s",
                "code",
                {"Retry-After": str(seconds)},
            )
        secret = secrets.token_urlsafe(32)
        values = body.model_dump() | {
            "secret_hash": hash_secret(secret),
            "label": body.label or DEFAULT_LABELS[body.platform],
        }
        # A typed reference is resolved to its pairing id in SQL, then claimed the same way.
        query = "pair_device" if body.pairing_id is not None else "pair_device_by_reference"
        result = db.result(query, values)
        outcome = result["outcome"]
        if outcome == "busy":
            seconds = max(1, int(result["retry_after"]))
            raise ApiError(
                429,
                f"code: too many pairing attempts right now; try again in {seconds} s",
                "code",
                {"Retry-After": str(seconds)},
            )
        if outcome != "paired":
            # Wrong, expired, locked or unknown: one answer, so that it never confirms digits.
            raise ApiError(403, "code: not a valid pairing code (wrong, expired or locked)", "code")
        relative = RelativeOut.model_validate(result["relative"])
        return PairResponse(
            device_id=result["device_id"],
            device_secret=secret,
            household_id=result["household_id"],
            relative_id=relative.id,
            relative_name=relative.display_name,
            relative=relative,
        )

    @app.put(
        "/v1/devices/me/tokens",
        response_model=TokensResponse,
        responses=_errors(401, 413, 422, 503),
        tags=["device"],
    )
    def update_tokens(body: TokensRequest, device: Device) -> TokensResponse:
        """Replace push tokens; the ones sent become valid again, the others are kept."""
        result = db.result("update_device_tokens", {**body.model_dump(), "device_id": device})
        return TokensResponse.model_validate(result)

    @app.get(
        "/v1/devices/me/calls",
        response_model=UpcomingCallsResponse,
        responses=_errors(401, 422, 503),
        tags=["device"],
    )
    def upcoming_calls(
        device: Device,
        from_: Annotated[
            AwareDatetime | None,
            Query(alias="from", description="window start, with a UTC offset (default: now)"),
        ] = None,
        to: Annotated[
            AwareDatetime | None,
            Query(description="window end, with a UTC offset (default: `from` + 7 days)"),
        ] = None,
    ) -> UpcomingCallsResponse:
        """The upcoming calls of this device's relative in [from, to], at most 62 days: the
        occurrences the scheduler will ring, with the state of those already queued (the
        dashboard's `upcoming_calls`, for this relative only)."""
        start = from_ or datetime.fromtimestamp(clock(), UTC)
        try:
            end = to or start + UPCOMING_DEFAULT_SPAN
        except OverflowError:
            raise ApiError(422, "invalid from: too far in the future", "from") from None
        if end < start:
            raise ApiError(422, "invalid to: must not be before from", "to")
        if end - start > UPCOMING_MAX_SPAN:
            raise ApiError(422, "invalid to: must be at most 62 days after from", "to")
        rows = db.rows("device_upcoming_calls", {"device_id": device, "from": start, "to": end})
        return UpcomingCallsResponse.model_validate(
            {"from": start, "to": end, "calls": [UpcomingCall.model_validate(r) for r in rows]}
        )

    @app.post(
        "/v1/devices/me/heartbeat",
        response_model=HeartbeatResponse,
        responses=_errors(401, 413, 422, 503),
        tags=["device"],
    )
    def heartbeat(body: HeartbeatRequest, device: Device) -> HeartbeatResponse:
        """Record that the app is alive, its version and its permissions."""
        seen = db.result("device_heartbeat", {**body.model_dump(), "device_id": device})
        return HeartbeatResponse(last_seen_at=seen)

    @app.post(
        "/v1/calls/{session_id}/events",
        response_model=CallEventResponse,
        responses=_errors(401, 404, 409, 410, 413, 422, 503),
        tags=["calls"],
    )
    def call_event(
        session_id: uuid.UUID, body: CallEventRequest, device: Device
    ) -> CallEventResponse:
        """Report a call event of this device's call session. Illegal transitions get 409
        naming the current state; repeats change nothing. `accepted` returns a fresh
        ElevenLabs conversation token (503 if none can be had: the session is then left as
        it was); `accepted` after the call expired or was cancelled gets 410."""
        keys = {"device_id": device, "session_id": session_id}
        token = None
        if body.event == "accepted":
            try:  # 404 / 409 / 410 before minting anything
                db.result("prepare_call_accept", keys)
            except ApiError as refused:
                raise _with_contract(refused) from None
            agent = settings.elevenlabs_agent_id
            wait = token_limiter.hit(str(session_id))
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                raise ApiError(
                    429,
                    f"conversation: {settings.conversation_tokens_per_session} conversation"
                    f" tokens were already minted for this call; try again in {seconds} s",
                    "conversation",
                    {"Retry-After": str(seconds)},
                )
            if token_client is None or not agent:
                raise ApiError(
                    503,
                    "conversation: ElevenLabs is not configured "
                    "(ELEVENLABS_API_KEY, ELEVENLABS_AGENT_ID)",
                    "conversation",
                )
            try:
                token = token_client.mint(agent)
            except ElevenLabsUnavailable as error:
                raise ApiError(503, f"conversation: {error}", "conversation") from None
        try:
            result = db.result(
                "record_device_event",
                {
                    **keys,
                    "event": body.event,
                    "at": body.at,
                    "conversation_id": body.conversation_id,
                },
            )
        except ApiError as refused:
            raise _with_contract(refused) from None
        conversation = None
        if token is not None and settings.elevenlabs_agent_id:
            conversation = ConversationStart(
                token=token,
                agent_id=settings.elevenlabs_agent_id,
                dynamic_variables=result["dynamic_variables"],
            )
        return CallEventResponse(
            session_id=result["session_id"],
            event=result["event"],
            status=result["status"],
            changed=result["changed"],
            conversation=conversation,
        )

    @app.post(
        WEBHOOK_PATH,
        response_model=WebhookAck,
        responses=_errors(400, 401, 413, 503),
        tags=["webhooks"],
        openapi_extra={
            "parameters": [
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "t=<unix seconds>,v0=<hex HMAC-SHA256 of '{t}.{raw body}'>",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WEBHOOK_BODY}},
            },
        },
    )
    async def elevenlabs_webhook(request: Request) -> WebhookAck | JSONResponse:
        """ElevenLabs post-call webhook. The signature is verified over the raw body before
        anything is parsed (401; 400 for a body that is not an event; both only counted).
        Every accepted event is stored first, then ingested; redeliveries are answered 200
        without a second effect, and so are events that match no call session."""
        secret = settings.elevenlabs_webhook_secret
        if not secret:
            raise ApiError(503, "webhook: ELEVENLABS_WEBHOOK_SECRET is not configured", "webhook")
        try:  # the header's shape and age, before a byte of the body is read
            signed = parse_signature_header(request.headers.get(SIGNATURE_HEADER), clock())
        except SignatureError as error:
            await run_in_threadpool(count_rejection, error.reason)
            raise ApiError(401, str(error), SIGNATURE_HEADER) from None
        body = await _read_signed(request, signed, secret)
        if body is None:
            await run_in_threadpool(count_rejection, "too_large")
            return too_large_response(settings.webhook_max_bytes)
        try:
            signed.check(body.mac)
        except SignatureError as error:
            body.close()
            await run_in_threadpool(count_rejection, error.reason)
            raise ApiError(401, str(error), SIGNATURE_HEADER) from None
        try:
            return await run_in_threadpool(ingest, body)
        finally:
            body.close()

    def ingest(spooled: SpooledBody) -> WebhookAck:
        """Parse, store and process a verified body (in a worker thread: it may be large)."""
        raw = spooled.read()
        try:
            event = parse_webhook(raw)
        except WebhookPayloadError as error:
            count_rejection("malformed")
            raise ApiError(400, str(error), error.field) from None
        stored = db.rows(
            "store_webhook_event",
            {"payload": Jsonb(without_audio(event)), "payload_bytes": len(raw)},
        )[0]
        status, session = stored["status"], None
        if status in ("received", "failed"):
            outcome = db.result(
                "process_webhook_event",
                {"event_id": stored["event_id"], "concern_fields": concern_fields},
            )
            status, session = outcome["status"], outcome["call_session_id"]
        return WebhookAck(
            event_id=stored["event_id"],
            status=status,
            duplicate=stored["duplicate"],
            call_session_id=session,
        )

    async def _read_signed(
        request: Request, signed: SignatureHeader, secret: str
    ) -> SpooledBody | None:
        """The body, streamed into the HMAC and a spool file that keeps at most
        SPOOL_MEMORY_BYTES in memory; None once it is over the limit (reading stops)."""
        spooled = SpooledBody(signed.mac(secret))
        async for chunk in request.stream():
            if not await spooled.add(chunk, settings.webhook_max_bytes):
                spooled.close()
                return None
        await spooled.flush()
        return spooled

    app.include_router(alert_router(settings, db, _errors))
    return app


def openapi_document(settings: ApiSettings) -> str:
    """The OpenAPI document as checked in (`openapi.json`): stable JSON, one trailing newline."""
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"


def serve(settings: ApiSettings) -> None:
    """Serve the API with uvicorn until interrupted."""
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        # The client's address is worked out by the app from CALLPANION_TRUSTED_PROXIES;
        # uvicorn's own rewriting trusts 127.0.0.1 whatever is configured.
        proxy_headers=False,
    )
