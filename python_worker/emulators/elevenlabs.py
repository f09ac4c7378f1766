"""A local ElevenLabs: the conversation-token endpoint, and signed post-call webhooks.

`ElevenLabsEmulator` is a real HTTP server on loopback answering
`GET /v1/convai/conversation/token?agent_id=…` as ElevenLabs does: header `xi-api-key`
required (401 otherwise), a known agent (404 otherwise), `{"token": …}` on success. It records
every request. `post_signed_webhook` delivers a webhook exactly as ElevenLabs signs it
(`ElevenLabs-Signature: t=<unix seconds>,v0=<hex HMAC-SHA256(secret, "{t}.{body}")>`); the
signing here is written independently of python_worker.api.elevenlabs on purpose, so the two check
each other. Self-contained: only the standard library and httpx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class ElevenLabsEmulator:
    """ElevenLabs' conversation-token endpoint on 127.0.0.1 (a free port unless given)."""

    api_key: str
    agent_ids: Iterable[str] = ()
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the ElevenLabs emulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Listen (the socket accepts connections as soon as this returns); the base URL."""
        emulator = self
        agents = set(self.agent_ids)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet in tests

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                emulator.requests.append(
                    RecordedRequest(
                        "GET", url.path, query, {k.lower(): v for k, v in self.headers.items()}
                    )
                )
                if url.path != "/v1/convai/conversation/token":
                    self._answer(404, {"detail": "Not Found"})
                    return
                key = self.headers.get("xi-api-key")
                if not key or not hmac.compare_digest(key.encode(), emulator.api_key.encode()):
                    self._answer(
                        401,
                        {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
                    )
                    return
                agent = (query.get("agent_id") or [""])[0]
                if not agent:
                    self._answer(
                        422, {"detail": [{"loc": ["query", "agent_id"], "msg": "Field required"}]}
                    )
                    return
                if agents and agent not in agents:
                    self._answer(
                        404,
                        {
                            "detail": {
                                "status": "agent_not_found",
                                "message": f"Agent {agent} not found",
                            }
                        },
                    )
                    return
                token = "emu_" + secrets.token_urlsafe(24)
                emulator.tokens.append(token)
                self._answer(200, {"token": token})

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="elevenlabs-emulator", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `ElevenLabs-Signature` header value for this body at this time."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v0={digest.hexdigest()}"


def post_signed_webhook(
    url: str,
    secret: str,
    payload: dict[str, Any] | bytes,
    *,
    timestamp: int | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST a webhook signed as ElevenLabs signs it (timestamp defaults to now)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "ElevenLabs-Signature": sign(secret, body, stamp),
    }
    if client is not None:
        return client.post(url, content=body, headers=headers)
    with httpx.Client(timeout=30) as own:
        return own.post(url, content=body, headers=headers)


def transcription_payload(
    conversation_id: str,
    *,
    call_session_id: str | None = None,
    agent_id: str = "agent_emulated",
    event_timestamp: int | None = None,
    summary: str = "Talked about the garden and the grandchildren's visit.",
    title: str = "Garden and grandchildren",
    call_successful: str = "success",
    duration_secs: int = 312,
    start_time_unix_secs: int | None = None,
    cost: int = 1412,
    data_collection: dict[str, Any] | None = None,
    evaluation: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A post_call_transcription event shaped like ElevenLabs' (with some fields we ignore)."""
    now = int(time.time())
    start = now - duration_secs - 30 if start_time_unix_secs is None else start_time_unix_secs
    variables: dict[str, Any] = {"relative_name": "Mum", "household_name": "The Smiths"}
    if call_session_id is not None:
        variables["call_session_id"] = call_session_id
    collected = {"mood": "cheerful"} if data_collection is None else data_collection
    evaluated = {"greeted_by_name": "success"} if evaluation is None else evaluation
    return {
        "type": "post_call_transcription",
        "event_timestamp": now if event_timestamp is None else event_timestamp,
        "data": {
            "agent_id": agent_id,
            "conversation_id": conversation_id,
            "status": "done",
            "user_id": None,
            "transcript": [
                {
                    "role": "agent",
                    "message": "Good morning! How are you today?",
                    "time_in_call_secs": 0,
                    "tool_calls": [],
                    "feedback": None,
                },
                {
                    "role": "user",
                    "message": "Oh, lovely, I was just in the garden.",
                    "time_in_call_secs": 4,
                    "tool_calls": [],
                    "feedback": None,
                },
            ],
            "metadata": {
                "start_time_unix_secs": start,
                "call_duration_secs": duration_secs,
                "cost": cost,
                "termination_reason": "end_call tool was called.",
                "deletion_settings": {"delete_transcript_and_pii": False},
                "feedback": {"overall_score": None, "likes": 0, "dislikes": 0},
            },
            "analysis": {
                "call_successful": call_successful,
                "transcript_summary": summary,
                "call_summary_title": title,
                "evaluation_criteria_results": {
                    key: {"criteria_id": key, "result": result, "rationale": f"{key} was {result}"}
                    for key, result in evaluated.items()
                },
                "data_collection_results": {
                    key: {"data_collection_id": key, "value": value, "rationale": "from the call"}
                    for key, value in collected.items()
                },
            },
            "conversation_initiation_client_data": {
                "conversation_config_override": {"agent": {"language": "en"}},
                "dynamic_variables": variables,
            },
        },
    }


def audio_payload(
    conversation_id: str,
    audio: bytes,
    *,
    agent_id: str = "agent_emulated",
    event_timestamp: int | None = None,
) -> dict[str, Any]:
    """A post_call_audio event: the call's MP3, base64-encoded."""
    return {
        "type": "post_call_audio",
        "event_timestamp": int(time.time()) if event_timestamp is None else event_timestamp,
        "data": {
            "agent_id": agent_id,
            "conversation_id": conversation_id,
            "full_audio": base64.b64encode(audio).decode(),
        },
    }
