"""A local ElevenLabs: the conversation-token endpoint, a scripted conversation, and signed
post-call webhooks.

`ElevenLabsEmulator` is a real HTTP server on loopback answering
`GET /v1/convai/conversation/token?agent_id=…` as ElevenLabs does: header `xi-api-key`
required (401 otherwise), a known agent (404 otherwise), `{"token": …}` on success. It records
every request.

It also holds the conversation the relative's app starts with that token (the WebRTC session
cannot run here, so it is two small routes the phone simulator calls):
`POST /v1/convai/conversation/start {"conversation_token", "dynamic_variables"}` answers
`{"conversation_id", "agent_id"}`, or 401 for a token it never minted or one older than
`token_ttl_s` (ElevenLabs' tokens last about 10 minutes); the scripted conversation then runs
for `conversation_s` seconds; `POST /v1/convai/conversation/{id}/wait` returns when it has
ended (the agent's end_call), with its transcript. When it ends, the emulator posts the
`post_call_transcription` webhook in ElevenLabs' shape (transcript turns, analysis with
summary, data-collection and evaluation results, metadata with the real start time and
duration, the dynamic variables echoed back) to `webhook_url`, signed with `webhook_secret`,
and resends the same body after a non-200 answer, with growing pauses, as ElevenLabs does.

`post_signed_webhook` delivers a webhook exactly as ElevenLabs signs it
(`ElevenLabs-Signature: t=<unix seconds>,v0=<hex HMAC-SHA256(secret, "{t}.{body}")>`); the
signing here is written independently of python_worker.api.elevenlabs on purpose, so the two check
each other. Self-contained: only the standard library and httpx.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
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


#: ElevenLabs' conversation tokens are valid about 10 minutes.
DEFAULT_TOKEN_TTL_S = 600.0
#: The scripted conversation: long enough to watch, short enough for a demo.
DEFAULT_CONVERSATION_S = 4.0
#: ElevenLabs resends a webhook that failed; here after 1, 2, 4 and 8 seconds.
DEFAULT_WEBHOOK_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
#: The longest `/wait` holds a request open (the caller asks again).
MAX_WAIT_S = 60.0
_WAIT_PATH = re.compile(r"^/v1/convai/conversation/([A-Za-z0-9_]+)/wait$")
#: `DELETE /v1/convai/conversations/{conversation_id}`: the conversation, its transcript and
#: audio are deleted at ElevenLabs (200 with an empty JSON object; 404 when it does not exist).
_DELETE_PATH = re.compile(r"^/v1/convai/conversations/([^/]+)$")


@dataclass
class Conversation:
    """One conversation held by the emulator, from start to its webhook."""

    conversation_id: str
    agent_id: str
    dynamic_variables: dict[str, Any]
    started_at: float
    ended: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    webhook_status: int | None = None
    #: Set once the webhook was answered 200 or every resend was spent.
    webhook_done: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def _setting(event: threading.Event) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()


def scripted_transcript(variables: dict[str, Any], duration_s: float) -> list[dict[str, Any]]:
    """The conversation the agent and the relative have (times spread over its duration)."""
    name = str(variables.get("relative_name") or "there")
    lines = [
        ("agent", f"Hello {name}! It's your CallPanion companion. How are you today?"),
        ("user", "Oh, hello dear. I'm well, I've been out in the garden this morning."),
        ("agent", "That sounds lovely. What are you growing at the moment?"),
        ("user", "Tomatoes, and the roses are out. My knee is much better too."),
        ("agent", "I'm so glad. I'll let the family know you're doing well. Goodbye for now!"),
    ]
    step = max(duration_s, 1.0) / len(lines)
    return [
        {
            "role": role,
            "message": message,
            "time_in_call_secs": int(i * step),
            "tool_calls": [],
            "feedback": None,
        }
        for i, (role, message) in enumerate(lines)
    ]


@dataclass
class ElevenLabsEmulator:
    """ElevenLabs' conversation-token endpoint on 127.0.0.1 (a free port unless given)."""

    api_key: str
    agent_ids: Iterable[str] = ()
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    #: How long a minted conversation token may start a conversation.
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    #: Where post-call webhooks go and the secret they are signed with (None: not sent).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    #: How long the scripted conversation lasts.
    conversation_s: float = DEFAULT_CONVERSATION_S
    #: Pauses before each resend of a webhook that was not answered 200.
    webhook_backoff_s: tuple[float, ...] = DEFAULT_WEBHOOK_BACKOFF_S
    conversations: dict[str, Conversation] = field(default_factory=dict)
    #: Every webhook delivery attempt: (conversation id, HTTP status or 0 when unreachable).
    webhook_attempts: list[tuple[str, int]] = field(default_factory=list)
    #: Conversations held only by id (tests seed them: ones the emulator did not run).
    held: set[str] = field(default_factory=set)
    #: Every conversation deleted, in order.
    deleted: list[str] = field(default_factory=list)
    #: Statuses to answer the next DELETE requests with instead (an outage: 503, 429, ...).
    delete_faults: list[int] = field(default_factory=list)
    _issued: dict[str, tuple[str, float]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

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

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                emulator.requests.append(
                    RecordedRequest(
                        "POST", url.path, {}, {k.lower(): v for k, v in self.headers.items()}
                    )
                )
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    self._answer(400, {"detail": "body must be a JSON object"})
                    return
                if url.path == "/v1/convai/conversation/start":
                    status, answer = emulator.start_conversation(body)
                    self._answer(status, answer)
                    return
                match = _WAIT_PATH.match(url.path)
                if match is not None:
                    status, answer = emulator.wait_conversation(
                        match.group(1), float(body.get("timeout") or MAX_WAIT_S)
                    )
                    self._answer(status, answer)
                    return
                self._answer(404, {"detail": "Not Found"})

            def do_DELETE(self) -> None:
                url = urlsplit(self.path)
                emulator.requests.append(
                    RecordedRequest(
                        "DELETE", url.path, {}, {k.lower(): v for k, v in self.headers.items()}
                    )
                )
                match = _DELETE_PATH.match(url.path)
                if match is None:
                    self._answer(404, {"detail": "Not Found"})
                    return
                key = self.headers.get("xi-api-key")
                if not key or not hmac.compare_digest(key.encode(), emulator.api_key.encode()):
                    self._answer(
                        401,
                        {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
                    )
                    return
                status, answer = emulator.delete_conversation(match.group(1))
                self._answer(status, answer)

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
                emulator._issued[token] = (agent, time.time())
                self._answer(200, {"token": token})

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="elevenlabs-emulator", daemon=True
        )
        self._thread.start()
        return self.base_url

    # -- the conversation ------------------------------------------------------------------
    def start_conversation(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Start the scripted conversation for a minted, unexpired token (401 otherwise)."""
        token = body.get("conversation_token")
        issued = self._issued.get(token) if isinstance(token, str) else None
        if issued is None:
            return 401, {
                "detail": {"status": "invalid_token", "message": "Invalid conversation token"}
            }
        agent, at = issued
        if time.time() - at > self.token_ttl_s:
            return 401, {
                "detail": {"status": "token_expired", "message": "Conversation token expired"}
            }
        variables = body.get("dynamic_variables") or {}
        if not isinstance(variables, dict):
            return 422, {"detail": "dynamic_variables must be an object"}
        conversation = Conversation("conv_" + secrets.token_hex(12), agent, variables, time.time())
        self.conversations[conversation.conversation_id] = conversation
        threading.Thread(
            target=self._run_conversation,
            args=(conversation,),
            name=f"conversation-{conversation.conversation_id}",
            daemon=True,
        ).start()
        return 200, {"conversation_id": conversation.conversation_id, "agent_id": agent}

    def delete_conversation(self, conversation_id: str) -> tuple[int, dict[str, Any]]:
        """Delete a conversation as ElevenLabs does: 200 `{}`, or 404 for an unknown id."""
        if self.delete_faults:
            status = self.delete_faults.pop(0)
            return status, {"detail": {"status": "service_unavailable", "message": "try again"}}
        if conversation_id in self.conversations or conversation_id in self.held:
            self.conversations.pop(conversation_id, None)
            self.held.discard(conversation_id)
            self.deleted.append(conversation_id)
            return 200, {}
        return 404, {
            "detail": {
                "status": "conversation_not_found",
                "message": f"Conversation {conversation_id} not found",
            }
        }

    def wait_conversation(self, conversation_id: str, timeout: float) -> tuple[int, dict[str, Any]]:
        """Wait (at most `timeout` s) for a conversation to end; its transcript once it has."""
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            return 404, {"detail": {"status": "conversation_not_found"}}
        ended = conversation.ended.wait(min(max(timeout, 0.0), MAX_WAIT_S))
        return 200, {
            "conversation_id": conversation_id,
            "status": "done" if ended else "in-progress",
            "transcript": conversation.transcript if ended else [],
        }

    def _run_conversation(self, conversation: Conversation) -> None:
        # The scripted talk takes real time: it is what a watcher of the demo sees happen.
        if self._stopping.wait(self.conversation_s):
            return
        conversation.ended_at = time.time()
        duration = conversation.ended_at - conversation.started_at
        conversation.transcript = scripted_transcript(conversation.dynamic_variables, duration)
        conversation.ended.set()
        if self.webhook_url and self.webhook_secret:
            self._deliver_webhook(conversation, webhook_payload(conversation))

    def _deliver_webhook(self, conversation: Conversation, payload: dict[str, Any]) -> None:
        assert self.webhook_url
        assert self.webhook_secret
        body = json.dumps(payload).encode()  # the same bytes on every resend
        pauses = (*self.webhook_backoff_s, None)
        with httpx.Client(timeout=30) as client, _setting(conversation.webhook_done):
            for pause in pauses:
                try:
                    status = post_signed_webhook(
                        self.webhook_url, self.webhook_secret, body, client=client
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.webhook_attempts.append((conversation.conversation_id, status))
                conversation.webhook_status = status
                if status == 200 or pause is None or self._stopping.wait(pause):
                    return

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        self._stopping.set()
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
    call_binding: str | None = None,
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
    """A post_call_transcription event shaped like ElevenLabs' (with some fields we ignore).

    `call_session_id` and `call_binding` are the dynamic variables the API gave the app on
    `accepted`, echoed back as ElevenLabs does."""
    now = int(time.time())
    start = now - duration_secs - 30 if start_time_unix_secs is None else start_time_unix_secs
    variables: dict[str, Any] = {"relative_name": "Mum", "household_name": "The Smiths"}
    if call_session_id is not None:
        variables["call_session_id"] = call_session_id
    if call_binding is not None:
        variables["call_binding"] = call_binding
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


def webhook_payload(conversation: Conversation) -> dict[str, Any]:
    """The post_call_transcription event of a conversation the emulator held."""
    assert conversation.ended_at is not None
    duration = max(1, round(conversation.ended_at - conversation.started_at))
    name = str(conversation.dynamic_variables.get("relative_name") or "The relative")
    payload = transcription_payload(
        conversation.conversation_id,
        agent_id=conversation.agent_id,
        summary=(
            f"{name} was cheerful and chatty: a morning in the garden, the roses are out, "
            "and the sore knee is better."
        ),
        title="Garden and a better knee",
        duration_secs=duration,
        start_time_unix_secs=int(conversation.started_at),
        cost=duration * 12,
        data_collection={"mood": "cheerful", "wellbeing_concern": "no"},
        evaluation={"greeted_by_name": "success"},
    )
    data = payload["data"]
    data["transcript"] = conversation.transcript
    # ElevenLabs echoes exactly the variables the client started the conversation with.
    data["conversation_initiation_client_data"]["dynamic_variables"] = dict(
        conversation.dynamic_variables
    )
    return payload
