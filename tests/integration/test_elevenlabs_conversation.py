"""The ElevenLabs emulator holds a scripted conversation and posts the signed webhook."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from python_worker.api.elevenlabs import SIGNATURE_HEADER, verify_signature
from python_worker.emulators.elevenlabs import ElevenLabsEmulator

SECRET = "wsec_conversation_test"
AGENT = "agent_conversation"


class Receiver:
    """The API's webhook route stand-in: answers the given statuses in turn, hands over each
    delivery through a queue."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.deliveries: queue.Queue[tuple[bytes, str]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.deliveries.put((body, self.headers.get(SIGNATURE_HEADER, "")))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/elevenlabs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self) -> tuple[bytes, str]:
        return self.deliveries.get(timeout=30)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver([503, 200])
    yield started
    started.server.shutdown()
    started.server.server_close()


@pytest.fixture
def emulator(receiver: Receiver) -> Iterator[ElevenLabsEmulator]:
    started = ElevenLabsEmulator(
        api_key="xi-test",
        agent_ids=[AGENT],
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        conversation_s=0.3,
        webhook_backoff_s=(0.05, 0.05),
    )
    started.start()
    yield started
    started.stop()


def _mint(client: httpx.Client, emulator: ElevenLabsEmulator) -> str:
    response = client.get(
        f"{emulator.base_url}/v1/convai/conversation/token",
        params={"agent_id": AGENT},
        headers={"xi-api-key": "xi-test"},
    )
    token: str = response.json()["token"]
    return token


def test_a_conversation_ends_with_a_signed_webhook_resent_after_a_non_200(
    emulator: ElevenLabsEmulator, receiver: Receiver
) -> None:
    variables = {"relative_name": "Nan", "call_session_id": "5d3c7f5e-0000-4000-8000-000000000001"}
    with httpx.Client(timeout=30) as client:
        token = _mint(client, emulator)
        before = time.time()
        started = client.post(
            f"{emulator.base_url}/v1/convai/conversation/start",
            json={"conversation_token": token, "dynamic_variables": variables},
        )
        assert started.status_code == 200
        conversation = started.json()["conversation_id"]
        assert started.json()["agent_id"] == AGENT
        ended = client.post(
            f"{emulator.base_url}/v1/convai/conversation/{conversation}/wait",
            json={"timeout": 30},
        ).json()
    assert ended["status"] == "done"
    assert [t["role"] for t in ended["transcript"]] == ["agent", "user"] * 2 + ["agent"]
    first, first_signature = receiver.next()
    second, second_signature = receiver.next()  # resent: the first got 503
    assert first == second
    for signature in (first_signature, second_signature):
        verify_signature(signature, first, SECRET, time.time())
    event = json.loads(first)
    assert event["type"] == "post_call_transcription"
    data = event["data"]
    assert (data["conversation_id"], data["agent_id"]) == (conversation, AGENT)
    assert data["conversation_initiation_client_data"]["dynamic_variables"] == variables
    assert data["transcript"] == ended["transcript"]
    assert abs(data["metadata"]["start_time_unix_secs"] - before) <= 1
    assert data["metadata"]["call_duration_secs"] >= 1
    assert data["analysis"]["transcript_summary"].startswith("Nan was cheerful")
    assert data["analysis"]["data_collection_results"]["mood"]["value"] == "cheerful"
    assert data["analysis"]["evaluation_criteria_results"]["greeted_by_name"]["result"] == "success"
    assert emulator.conversations[conversation].webhook_done.wait(30)
    assert emulator.webhook_attempts == [(conversation, 503), (conversation, 200)]


def test_an_unknown_or_expired_token_starts_nothing(emulator: ElevenLabsEmulator) -> None:
    with httpx.Client(timeout=30) as client:
        start = f"{emulator.base_url}/v1/convai/conversation/start"
        unknown = client.post(start, json={"conversation_token": "emu_forged"})
        assert unknown.status_code == 401
        assert unknown.json()["detail"]["status"] == "invalid_token"
        token = _mint(client, emulator)
        emulator.token_ttl_s = -1.0  # every token minted so far is now too old
        expired = client.post(start, json={"conversation_token": token})
        assert expired.status_code == 401
        assert expired.json()["detail"]["status"] == "token_expired"
    assert emulator.conversations == {}
