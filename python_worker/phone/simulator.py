"""A simulated relative's phone: the Flutter app with flutter_callkit_incoming, over the network.

It pairs through the real `/v1/devices/pair` (one function, `Phone.pair`), registers its push
tokens, and holds a long poll open to the FCM and APNs emulators for each of its tokens, so
every push is handed over as soon as the emulator accepts it. Each push is checked as the app
would (python_worker.phone.checks), de-duplicated by its CallKit id (a duplicate never rings
twice; it is counted), then rung: the phone reports `delivered`, and then what its script
says (python_worker.phone.script): `accepted` (using the returned conversation token with the
ElevenLabs emulator), `connected` with the conversation id, `ended`; or `declined`, or
`timeout` when the ring time has passed. Everything it does is one JSON line on stdout.

A small control server on loopback (`GET /state`, `POST /answer`, `POST /decline`) lets a
person answer by hand (`callpanion phone answer|decline`); its address is in a state file.
It imports nothing from the API or the worker: it only talks to them over HTTP, as the app does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx

from python_worker.errors import CallPanionError
from python_worker.phone.checks import FCM_PATHS, Paired, PushRefused, Ring, check_push
from python_worker.phone.script import Behaviour

#: How long one long poll to an emulator waits for news before asking again.
INBOX_WAIT_S = 25.0
#: The app version the simulator reports when it pairs.
APP_VERSION = "callpanion-phone-simulator/1"
Emit = Callable[[dict[str, Any]], None]


def emit_json_line(record: dict[str, Any]) -> None:
    """One event as a JSON line on stdout (the default sink)."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PhoneEndpoints:
    """Where the phone reaches the API and the emulators (from their settings file)."""

    api_url: str
    fcm_url: str
    apns_url: str
    ca_file: str
    elevenlabs_url: str


@dataclass
class PhoneStats:
    """What the phone counted: calls rung, duplicates not rung, pushes refused by its checks."""

    rung: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused: int = 0
    stale: int = 0


class Phone:
    """One simulated phone (android: FCM; ios: APNs VoIP with an FCM fallback token).

    `app_state` is where the app is when an FCM push arrives (`foreground`, `background` or
    `terminated`): each takes its own path in the app, with its own checks
    (python_worker.phone.checks.PUSH_CHECKS). A VoIP push always takes PushKit's."""

    def __init__(
        self,
        name: str,
        platform: str,
        endpoints: PhoneEndpoints,
        script: list[Behaviour],
        *,
        emit: Emit = emit_json_line,
        state_dir: Path | None = None,
        control_port: int = 0,
        app_state: str = "background",
    ) -> None:
        if platform not in ("ios", "android"):
            raise CallPanionError(f"platform: must be ios or android, got {platform!r}")
        if app_state not in FCM_PATHS:
            raise CallPanionError(
                f"app_state: must be one of {', '.join(FCM_PATHS)}, got {app_state!r}"
            )
        self.app_state = app_state
        if not script:
            raise CallPanionError("script: give at least one behaviour")
        self.name = name
        self.platform = platform
        self.endpoints = endpoints
        self.script = list(script)
        self.emit_sink = emit
        self.state_dir = state_dir
        self.control_port = control_port
        # Tokens as the providers would hand them to the app.
        self.fcm_token = "fcm_" + secrets.token_urlsafe(48)
        self.voip_token = secrets.token_hex(32) if platform == "ios" else None
        self.apns_token = secrets.token_hex(32) if platform == "ios" else None
        self.device_id: str | None = None
        self.device_secret: str | None = None
        self.stats = PhoneStats()
        self.offline = False
        self.paired: Paired | None = None  # not paired yet: the app rings for nothing
        self._seen: set[str] = set()
        self._ringing: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[asyncio.Task[None]] = []
        context = ssl.create_default_context(cafile=endpoints.ca_file)
        self._api = httpx.AsyncClient(timeout=30)
        self._providers = httpx.AsyncClient(verify=context, timeout=INBOX_WAIT_S + 30)
        self._elevenlabs = httpx.AsyncClient(timeout=90)

    # -- output -------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        self.emit_sink({"t": _now().isoformat(), "phone": self.name, "event": event, **fields})

    # -- pairing: the one place that knows the request shape ----------------------------
    async def pair(self, pairing_id: str | None, code: str, reference: str | None = None) -> None:
        """Claim a pairing code with this phone's tokens (POST /v1/devices/pair). The pairing
        id comes from the dashboard's QR code or link; a person who types sends the
        reference shown beside the code instead."""
        which = (
            {"pairing_id": pairing_id} if reference is None else {"pairing_reference": reference}
        )
        body: dict[str, Any] = {
            **which,
            "code": code,
            "platform": self.platform,
            "fcm_token": self.fcm_token,
            "app_version": APP_VERSION,
            "label": f"{self.name} (simulated {self.platform})",
        }
        if self.platform == "ios":
            body |= {"voip_token": self.voip_token, "apns_token": self.apns_token}
        response = await self._api.post(f"{self.endpoints.api_url}/v1/devices/pair", json=body)
        if response.status_code != 201:
            raise CallPanionError(f"pairing refused: HTTP {response.status_code} {response.text}")
        answer = response.json()
        self.device_id, self.device_secret = answer["device_id"], answer["device_secret"]
        # What the app stores and compares every call push with (fcm_service.dart:401-407).
        self.paired = Paired(answer["household_id"], answer["relative_id"])
        self.emit("paired", device_id=self.device_id, relative=answer.get("relative"))

    @property
    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.device_id}.{self.device_secret}"}

    async def register_tokens(self) -> None:
        """PUT the current tokens (the app does this whenever a provider hands it new ones)."""
        tokens = {"fcm_token": self.fcm_token}
        if self.platform == "ios":
            tokens |= {"voip_token": self.voip_token or "", "apns_token": self.apns_token or ""}
        response = await self._api.put(
            f"{self.endpoints.api_url}/v1/devices/me/tokens", json=tokens, headers=self._auth
        )
        self.emit("tokens_registered", status=response.status_code)

    # -- receiving ------------------------------------------------------------------------
    def listen(self) -> None:
        """Open the long polls: FCM for every phone, APNs VoIP for an iPhone."""
        sources = [("fcm", self.endpoints.fcm_url, self.fcm_token)]
        if self.voip_token:
            sources.append(("apns", self.endpoints.apns_url, self.voip_token))
        for provider, base, token in sources:
            self._listeners.append(asyncio.create_task(self._listen(provider, base, token)))

    async def _listen(self, provider: str, base: str, token: str) -> None:
        after = 0
        while True:
            try:
                response = await self._providers.get(
                    f"{base}/_emulator/inbox",
                    params={"token": token, "after": after, "wait": INBOX_WAIT_S},
                )
                response.raise_for_status()
            except httpx.HTTPError as error:
                # The emulator went away (the demo is stopping): say so once and stop.
                self.emit("provider_unreachable", provider=provider, error=str(error))
                return
            answer = response.json()
            after = answer["next"]
            for record in answer["pushes"]:
                self.on_push(provider, record)

    def on_push(self, provider: str, record: dict[str, Any]) -> None:
        """One push as the app's handler gets it: check, de-duplicate, ring."""
        body = record.get("data") if provider == "fcm" else record.get("payload")
        if (body or {}).get("kind") not in (None, "incoming_call"):
            self.emit("notice", provider=provider, kind=body.get("kind") if body else None)
            return
        message = None
        if provider == "fcm":
            # The whole message as FCM delivered it, for the checks on more than its data.
            message = {
                "data": body,
                "android": record.get("android") or {},
                "notification": record.get("notification"),
            }
        try:
            ring = check_push(provider, body or {}, self.paired, self.app_state, message)
        except PushRefused as refused:
            self.stats.refused += 1
            self.emit(
                "push_refused",
                provider=provider,
                path=self.app_state if provider == "fcm" else "pushkit",
                field=refused.field,
                reason=refused.reason,
                effect=refused.effect,
            )
            return
        for warning in ring.warnings:
            self.emit("push_warning", provider=provider, call_id=ring.call_id, field=warning)
        if ring.call_id in self._seen:
            self.stats.duplicates += 1
            self.emit("duplicate_ignored", call_id=ring.call_id, provider=provider)
            return
        self._seen.add(ring.call_id)
        received_at = float(record.get("received_at") or time.time())
        self.emit(
            "push_received",
            call_id=ring.call_id,
            provider=provider,
            provider_received_at=received_at,
            caller=ring.caller,
            ring_ms=ring.duration_ms,
        )
        task = asyncio.create_task(self._ring(ring))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one call -------------------------------------------------------------------------
    def _next_behaviour(self) -> Behaviour:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _ring(self, ring: Ring) -> None:
        ring_s = ring.duration_ms / 1000
        if ring.expires_at is not None:
            # The ported app ends a call whose expires_at has passed instead of ringing.
            ring_s = min(ring_s, (ring.expires_at - _now()).total_seconds())
        if ring_s <= 0:
            self.stats.stale += 1
            self.emit("stale_push_ended", call_id=ring.call_id)
            return
        behaviour = self._next_behaviour()
        self.stats.rung.append(ring.call_id)
        self.emit("ringing", call_id=ring.call_id, behaviour=str(behaviour), ring_s=ring_s)
        await self.report(ring, "delivered")
        choice = await self._decide(ring, behaviour, ring_s)
        if choice == "answer":
            await self._talk(ring)
        elif choice == "decline":
            await self.report(ring, "declined")
        else:
            await self.report(ring, "timeout")
        self.emit("call_over", call_id=ring.call_id)
        await self._maybe_go_offline()

    async def _decide(self, ring: Ring, behaviour: Behaviour, ring_s: float) -> str:
        """What the person does before the ring times out: answer, decline or nothing."""
        if behaviour.kind == "decline":
            return "decline"
        if behaviour.kind == "answer" and behaviour.delay_s < ring_s:
            await asyncio.sleep(behaviour.delay_s)  # the relative takes a moment to pick up
            return "answer"
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if behaviour.kind == "manual":
            self._ringing[ring.call_id] = pending
        try:
            # flutter_callkit_incoming's ring timer: nobody answered within `duration`.
            return await asyncio.wait_for(asyncio.shield(pending), ring_s)
        except TimeoutError:
            return "timeout"
        finally:
            self._ringing.pop(ring.call_id, None)

    async def _talk(self, ring: Ring) -> None:
        answer = await self.report(ring, "accepted")
        if not ring.opens_call:
            # No string callType in CallKit's extra: accept opens no call screen
            # (callkit_service.dart:253), so no conversation starts.
            self.emit("no_call_screen", call_id=ring.call_id)
            return
        conversation = (answer or {}).get("conversation")
        if not conversation:
            self.emit("no_conversation", call_id=ring.call_id)
            return
        started = await self._elevenlabs.post(
            f"{self.endpoints.elevenlabs_url}/v1/convai/conversation/start",
            json={
                "conversation_token": conversation["token"],
                # Passed unchanged: the webhook finds the session by these.
                "dynamic_variables": conversation["dynamic_variables"],
            },
        )
        if started.status_code != 200:
            self.emit("conversation_refused", call_id=ring.call_id, status=started.status_code)
            await self.report(ring, "ended")
            return
        conversation_id = started.json()["conversation_id"]
        await self.report(ring, "connected", conversation_id=conversation_id)
        status = "in-progress"
        while status != "done":  # each request is held until the conversation ends
            waited = await self._elevenlabs.post(
                f"{self.endpoints.elevenlabs_url}/v1/convai/conversation/{conversation_id}/wait",
                json={"timeout": 60},
            )
            status = waited.json().get("status", "done") if waited.status_code == 200 else "done"
        # With the conversation id, as docs/APP_MIGRATION.md asks (a repeat of `connected`'s).
        await self.report(ring, "ended", conversation_id=conversation_id)

    async def report(
        self, ring: Ring, event: str, *, conversation_id: str | None = None
    ) -> dict[str, Any] | None:
        """POST one call event for the session CallKit's extra names, to the API the phone
        paired with (as the ported app does); the answer's JSON, or None. Nothing is sent
        when the extra names no session: the app's handlers then report nothing."""
        if ring.session_id is None:
            self.emit("not_reported", call_id=ring.call_id, sent=event)
            return None
        body: dict[str, Any] = {"event": event, "at": _now().isoformat()}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        try:
            response = await self._api.post(
                f"{self.endpoints.api_url}/v1/calls/{ring.session_id}/events",
                json=body,
                headers=self._auth,
            )
        except httpx.HTTPError as error:
            self.emit("report_failed", call_id=ring.call_id, sent=event, error=str(error))
            return None
        answer = response.json() if response.content else {}
        self.emit(
            "reported",
            call_id=ring.call_id,
            sent=event,
            http=response.status_code,
            status=answer.get("status"),
            error=answer.get("error"),
        )
        return answer if response.status_code == 200 else None

    # -- going offline ------------------------------------------------------------------------
    async def _maybe_go_offline(self) -> None:
        if self.script[0].kind == "offline" and not self.offline:
            await self.go_offline()

    async def go_offline(self) -> None:
        """The app is gone: its tokens die at the providers and it listens no more."""
        self.offline = True
        for listener in self._listeners:
            listener.cancel()
        dead = [(self.endpoints.fcm_url, self.fcm_token)]
        dead += [(self.endpoints.apns_url, t) for t in (self.voip_token, self.apns_token) if t]
        for base, token in dead:
            await self._providers.post(
                f"{base}/_emulator/tokens", json={"token": token, "state": "unregistered"}
            )
        self.emit("offline")

    # -- a person at the phone ------------------------------------------------------------
    def press(self, choice: str) -> str | None:
        """Answer or decline the call that is ringing for a person; its call id, or None."""
        for call_id, pending in self._ringing.items():
            if not pending.done():
                pending.set_result(choice)
                return call_id
        return None

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "platform": self.platform,
            "app_state": self.app_state,
            "device_id": self.device_id,
            "offline": self.offline,
            "ringing": list(self._ringing),
            "rung": self.stats.rung,
            "duplicates": self.stats.duplicates,
            "refused": self.stats.refused,
        }

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.decode(errors="replace").split(" ", 2)
            status, body = 404, {"error": f"path: no route {method} {path}", "field": "path"}
            if (method, path) == ("GET", "/state"):
                status, body = 200, self.state()
            elif method == "POST" and path in ("/answer", "/decline"):
                call_id = self.press(path[1:])
                status, body = (
                    (200, {"call_id": call_id, "done": path[1:]})
                    if call_id
                    else (409, {"error": "call: nothing is ringing for a person", "field": "call"})
                )
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    # -- the whole life -------------------------------------------------------------------------
    async def run(
        self, pairing_id: str | None, code: str, stop: asyncio.Event, reference: str | None = None
    ) -> PhoneStats:
        """Pair (by pairing id, or by the typed `reference`), register, listen and ring until
        `stop` is set."""
        control = await asyncio.start_server(self._control, "127.0.0.1", self.control_port)
        port = control.sockets[0].getsockname()[1]
        state_file = None
        try:
            await self.pair(pairing_id, code, reference)
            await self.register_tokens()
            if self.state_dir is not None:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                state_file = self.state_dir / f"{self.name}.json"
                state_file.write_text(
                    json.dumps({**self.state(), "pid": os.getpid(), "control": f"127.0.0.1:{port}"})
                )
            if self.script[0].kind == "offline":
                await self.go_offline()
            else:
                self.listen()
            self.emit("ready", control=f"127.0.0.1:{port}", script=[str(b) for b in self.script])
            await stop.wait()
        finally:
            for task in [*self._listeners, *self._tasks]:
                task.cancel()
            control.close()
            if state_file is not None:
                state_file.unlink(missing_ok=True)
            for client in (self._api, self._providers, self._elevenlabs):
                await client.aclose()
        self.emit("stopped", **self.state())
        return self.stats


async def run_phone(
    phone: Phone, pairing_id: str | None, code: str, reference: str | None = None
) -> PhoneStats:
    """Run a phone until SIGINT or SIGTERM (`callpanion phone run`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        return await phone.run(pairing_id, code, stop, reference)
    return phone.stats
