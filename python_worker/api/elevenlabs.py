"""ElevenLabs: conversation tokens for the app, and the signed post-call webhook.

Wire facts (PROTOCOLS.md, "ElevenLabs Agents"): a conversation token is
`GET {base}/v1/convai/conversation/token?agent_id=…` with header `xi-api-key`, answered
`{"token": …}` and valid about ten minutes, so it is minted when the relative accepts. Webhooks
carry `ElevenLabs-Signature: t=<unix seconds>,v0=<hex>` where v0 is
HMAC-SHA256(secret, "{t}.{raw body}"); only the raw bytes are ever verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import httpx

SIGNATURE_HEADER = "ElevenLabs-Signature"
#: ElevenLabs' own SDK refuses signatures older than 30 minutes.
SIGNATURE_TOLERANCE_MINUTES = 30
SIGNATURE_TOLERANCE_SECS = SIGNATURE_TOLERANCE_MINUTES * 60
#: A timestamp from the future is refused too; this much clock skew is forgiven.
SIGNATURE_FUTURE_SKEW_SECS = 5 * 60
#: UNIX seconds beyond this are not a plausible event time (year 5138).
MAX_EVENT_TIMESTAMP = 10**11
CONVERSATION_TOKEN_PATH = "/v1/convai/conversation/token"  # noqa: S105 - a URL path


class SignatureError(Exception):
    """The webhook's signature is missing, malformed, stale, from the future or wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WebhookPayloadError(Exception):
    """The (correctly signed) body is not a webhook event we can keep."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ElevenLabsUnavailable(Exception):
    """No conversation token could be had; the message says why, for the app and operators."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 ElevenLabs puts in `v0` for this body and timestamp."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """A complete `ElevenLabs-Signature` header value."""
    return f"t={timestamp},v0={signature(secret, body, timestamp)}"


@dataclass(frozen=True)
class SignatureHeader:
    """A well-formed, fresh `ElevenLabs-Signature`: its timestamp and its `v0` values."""

    timestamp: int
    candidates: tuple[bytes, ...]

    def mac(self, secret: str) -> hmac.HMAC:
        """The HMAC to stream the raw body into: HMAC-SHA256(secret, "{t}." + body)."""
        return hmac.new(secret.encode(), str(self.timestamp).encode() + b".", hashlib.sha256)

    def check(self, mac: hmac.HMAC) -> None:
        """Compare the finished HMAC with every `v0`, in constant time; SignatureError if none
        matches. All are compared, so timing says nothing about which one failed."""
        expected = mac.hexdigest().encode()
        matched = False
        for candidate in self.candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("bad_signature", f"{SIGNATURE_HEADER}: signature does not match")


#: A header longer than this is not a signature (a few v0 values during a secret rotation).
MAX_SIGNATURE_HEADER = 1024


def parse_signature_header(header: str | None, now: float) -> SignatureHeader:
    """Check the header's shape and age, before any of the body is read.

    Several `v0` values are allowed (one per secret while a secret is rotated); those that are
    not 64 hex characters are not candidates, and a header with none that is fails here.
    """
    if header is None or not header.strip():
        raise SignatureError("missing_signature", f"{SIGNATURE_HEADER} header is missing")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise SignatureError("bad_signature", f"{SIGNATURE_HEADER}: header is too long")
    timestamp: int | None = None
    candidates: list[bytes] = []
    malformed = 0
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise SignatureError("bad_signature", f"{SIGNATURE_HEADER}: t must be UNIX seconds")
            timestamp = int(value)
        elif key == "v0":
            # A value that cannot be a signature is not a candidate (the others still count).
            malformed += 1
            if len(value) == 64 and value.isascii() and _is_hex(value):
                malformed -= 1
                candidates.append(value.encode())
    if timestamp is not None and not candidates and malformed:
        raise SignatureError(
            "bad_signature", f"{SIGNATURE_HEADER}: v0 must be 64 hexadecimal characters"
        )
    if timestamp is None or not candidates:
        raise SignatureError(
            "bad_signature", f"{SIGNATURE_HEADER} must be t=<unix seconds>,v0=<hex signature>"
        )
    if timestamp < now - SIGNATURE_TOLERANCE_SECS:
        raise SignatureError(
            "stale_signature",
            f"{SIGNATURE_HEADER}: timestamp is more than {SIGNATURE_TOLERANCE_MINUTES} minutes old",
        )
    if timestamp > now + SIGNATURE_FUTURE_SKEW_SECS:
        raise SignatureError("future_signature", f"{SIGNATURE_HEADER}: timestamp is in the future")
    return SignatureHeader(timestamp, tuple(candidates))


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


def verify_signature(header: str | None, body: bytes, secret: str, now: float) -> int:
    """Check the header against the raw body; returns its timestamp or raises SignatureError."""
    parsed = parse_signature_header(header, now)
    mac = parsed.mac(secret)
    mac.update(body)
    parsed.check(mac)
    return parsed.timestamp


@dataclass(frozen=True)
class WebhookEvent:
    """The envelope of a verified webhook: what is needed to store it, and the whole payload."""

    type: str
    event_timestamp: int
    conversation_id: str | None
    payload: dict[str, Any]


def _reject_constant(name: str) -> Any:
    raise WebhookPayloadError("body", f"{name} is not valid JSON")


def _storable(value: Any) -> None:
    """Postgres jsonb refuses NUL characters, unpaired surrogates and numbers beyond a double
    (`1e400` reads as infinity); refuse them here, naming where they are."""
    stack: list[tuple[str, Any]] = [("body", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise WebhookPayloadError(where, "is a number too large to store")
        if isinstance(item, str):
            texts: list[str] = [item]
        elif isinstance(item, dict):
            texts = list(item.keys())
            stack.extend((_path(where, str(k)), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
            continue
        else:
            continue
        for text in texts:
            if "\x00" in text:
                raise WebhookPayloadError(where, "contains a NUL character (\\u0000)")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise WebhookPayloadError(where, "contains an unpaired UTF-16 surrogate") from None


def _path(where: str, key: str) -> str:
    return key if where == "body" else f"{where}.{key}"


def json_problem(error: Exception) -> str:
    """Why a body could not be read as JSON, for the client: never the parser's internals."""
    if isinstance(error, RecursionError):
        return "is nested too deeply to read"
    if isinstance(error, json.JSONDecodeError):
        return f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if isinstance(error, UnicodeDecodeError):
        return "is not UTF-8"
    if isinstance(error, ValueError) and "digits" in str(error):
        return f"has a number with more than {sys.get_int_max_str_digits()} digits"
    return "is not valid JSON"


def parse_webhook(body: bytes) -> WebhookEvent:
    """Parse a verified body; raises WebhookPayloadError naming the field and the reason.

    Unknown fields and event types are kept as they are (ElevenLabs adds fields over time).
    """
    try:
        # _reject_constant's WebhookPayloadError is no ValueError: it passes through as it is.
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise WebhookPayloadError("body", json_problem(error)) from None
    if not isinstance(payload, dict):
        raise WebhookPayloadError("body", "must be a JSON object")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind.strip() or len(kind) > 100:
        raise WebhookPayloadError("type", "must be a non-empty string of at most 100 characters")
    stamp = payload.get("event_timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise WebhookPayloadError("event_timestamp", "must be an integer (UNIX seconds)")
    if not 0 <= stamp <= MAX_EVENT_TIMESTAMP:
        raise WebhookPayloadError("event_timestamp", "is not a plausible UNIX time in seconds")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise WebhookPayloadError("data", "must be a JSON object")
    conversation = data.get("conversation_id")
    if conversation is not None and not isinstance(conversation, str):
        raise WebhookPayloadError("data.conversation_id", "must be a string")
    _storable(payload)
    return WebhookEvent(
        type=kind, event_timestamp=stamp, conversation_id=conversation, payload=payload
    )


def without_audio(event: WebhookEvent) -> dict[str, Any]:
    """The payload to store: post_call_audio's base64 audio is acknowledged, never kept."""
    if event.type != "post_call_audio" or "full_audio" not in event.payload["data"]:
        return event.payload
    data = {k: v for k, v in event.payload["data"].items() if k != "full_audio"}
    return {**event.payload, "data": data}


class ConversationTokenClient:
    """Mints WebRTC conversation tokens for an agent (one HTTP/1.1 keep-alive client)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 5.0) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=timeout)
        self._api_key = api_key

    def mint(self, agent_id: str) -> str:
        """A fresh conversation token, or ElevenLabsUnavailable with a clear reason."""
        try:
            response = self._client.get(
                CONVERSATION_TOKEN_PATH,
                params={"agent_id": agent_id},
                headers={"xi-api-key": self._api_key},
            )
        except httpx.HTTPError as error:
            raise ElevenLabsUnavailable(
                f"ElevenLabs could not be reached for a conversation token ({type(error).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise ElevenLabsUnavailable(
                f"ElevenLabs refused the API key (HTTP {response.status_code}); "
                "check ELEVENLABS_API_KEY"
            )
        if response.status_code != 200:
            raise ElevenLabsUnavailable(
                f"ElevenLabs answered HTTP {response.status_code} to the conversation token request"
            )
        try:
            token = response.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ElevenLabsUnavailable("ElevenLabs answered without a conversation token")
        return token

    def close(self) -> None:
        self._client.close()
