"""Start the FCM and APNs emulators together, with fresh credentials written to a folder.

Used by `callpanion emulators`, the tests and the benchmarks. Everything a sender needs to be
pointed at the emulators (CA file, service-account file whose `token_uri` is the emulator,
.p8 key, ids, hosts and ports) is in `EmulatorSuite.endpoints` and, as environment variables,
in `EmulatorSuite.env()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from python_worker.emulators.alerts import AlertEmulators
from python_worker.emulators.apns import STREAMS_BEFORE_AUTH, ApnsEmulator
from python_worker.emulators.credentials import (
    ApnsKey,
    ServiceAccount,
    make_apns_key,
    make_service_account,
    make_tls_files,
)
from python_worker.emulators.elevenlabs import ElevenLabsEmulator
from python_worker.emulators.fcm import FcmEmulator
from python_worker.emulators.server import HttpServer, server_ssl_context

DEFAULT_BUNDLE_ID = "com.callpanion.companion"
DEFAULT_PROJECT_ID = "callpanion-emulated"
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoints:
    """Where the emulators listen and the credential files that go with them."""

    ca_file: Path
    fcm_base_url: str
    token_uri: str
    project_id: str
    service_account_file: Path
    apns_host: str
    apns_port: int
    apns_key_file: Path
    apns_key_id: str
    apns_team_id: str
    bundle_id: str


class EmulatorSuite:
    """FCM (with OAuth) and APNs emulators on loopback TLS ports."""

    def __init__(
        self,
        folder: Path,
        *,
        fast: bool = False,
        fcm_port: int = 0,
        apns_port: int = 0,
        bundle_id: str = DEFAULT_BUNDLE_ID,
        project_id: str = DEFAULT_PROJECT_ID,
    ) -> None:
        self.folder = folder
        self.fast = fast
        self.bundle_id = bundle_id
        self.project_id = project_id
        self.tls = make_tls_files(folder / "tls")
        context = server_ssl_context(str(self.tls.cert_file), str(self.tls.key_file))
        self.fcm = FcmEmulator(fast=fast)
        self.apns = ApnsEmulator(bundle_ids={bundle_id}, fast=fast)
        self.fcm_server = HttpServer(self.fcm.handle, port=fcm_port, ssl_context=context)
        self.apns_server = HttpServer(
            self.apns.handle,
            port=apns_port,
            ssl_context=context,
            initial_max_streams=STREAMS_BEFORE_AUTH,
        )
        self.service_account: ServiceAccount | None = None
        self.apns_key: ApnsKey | None = None
        self._endpoints: Endpoints | None = None

    async def start(self) -> Endpoints:
        await self.fcm_server.start()
        await self.apns_server.start()
        fcm_base = f"https://localhost:{self.fcm_server.port}"
        account = make_service_account(self.project_id, f"{fcm_base}/token")
        self.fcm.add_service_account(
            account.client_email, account.project_id, account.key_id, account.public_key_pem
        )
        key = make_apns_key()
        self.apns.add_key(key.key_id, key.team_id, key.public_key_pem)
        self.service_account, self.apns_key = account, key
        self._endpoints = Endpoints(
            ca_file=self.tls.ca_file,
            fcm_base_url=fcm_base,
            token_uri=f"{fcm_base}/token",
            project_id=self.project_id,
            service_account_file=account.write(self.folder / "service-account.json"),
            apns_host="localhost",
            apns_port=self.apns_server.port,
            apns_key_file=key.write(self.folder),
            apns_key_id=key.key_id,
            apns_team_id=key.team_id,
            bundle_id=self.bundle_id,
        )
        return self._endpoints

    async def stop(self) -> None:
        await self.fcm_server.stop()
        await self.apns_server.stop()

    @property
    def endpoints(self) -> Endpoints:
        assert self._endpoints is not None, "start() first"
        return self._endpoints

    def env(self) -> dict[str, str]:
        """The worker's environment variables that point it at these emulators."""
        e = self.endpoints
        return {
            "FCM_SERVICE_ACCOUNT_FILE": str(e.service_account_file),
            "FCM_BASE_URL": e.fcm_base_url,
            "FCM_CA_FILE": str(e.ca_file),
            "APNS_KEY_FILE": str(e.apns_key_file),
            "APNS_KEY_ID": e.apns_key_id,
            "APNS_TEAM_ID": e.apns_team_id,
            "APNS_BUNDLE_ID": e.bundle_id,
            "APNS_HOST": e.apns_host,
            "APNS_PORT": str(e.apns_port),
            "APNS_CA_FILE": str(e.ca_file),
        }


class ThreadedSuite:
    """An EmulatorSuite running on its own event loop in a background thread.

    Tests use this so that blocking clients (google-auth fetches tokens synchronously, even
    inside firebase-admin's async client) can reach the emulators without deadlocking.
    """

    def __init__(self, suite: EmulatorSuite) -> None:
        self.suite = suite
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulators", daemon=True)

    def start(self) -> Endpoints:
        self._thread.start()
        return self.run(self.suite.start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the emulators' loop and wait for its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout=30)

    def call(self, function: Callable[[], T]) -> T:
        """Call a plain function on the emulators' loop (e.g. `server.goaway_all`)."""

        async def wrapper() -> T:
            return function()

        return self.run(wrapper())

    def stop(self) -> None:
        try:
            self.run(self.suite.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@contextmanager
def emulators_in_thread(folder: Path, **options: object) -> Iterator[ThreadedSuite]:
    """Start the emulators in a background thread; stop them on exit."""
    threaded = ThreadedSuite(EmulatorSuite(folder, **options))  # type: ignore[arg-type]
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


#: The settings file `callpanion emulators` writes beside its credentials; the worker, the API
#: and the phone simulator read it with `callpanion --env-file` (or CALLPANION_ENV_FILE).
ENV_FILE_NAME = "emulators.env"


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """Write `NAME=value` lines (dotenv syntax) atomically: a reader never sees half a file."""
    lines = ["# written by `callpanion emulators`; valid while they run\n"]
    lines += [f"{name}={json.dumps(value)}\n" for name, value in env.items()]
    partial = path.with_suffix(".partial")
    partial.write_text("".join(lines))
    partial.chmod(0o600)  # it holds the webhook secret and the emulated API key
    partial.replace(path)
    return path


async def serve(
    folder: Path,
    *,
    fast: bool = False,
    fcm_port: int = 0,
    apns_port: int = 0,
    elevenlabs_port: int = 0,
    webhook_url: str | None = None,
    twilio_inbound_url: str | None = None,
    env_file: Path | None = None,
    as_json: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the FCM, APNs and ElevenLabs emulators, and the family-alert ones (Web Push,
    Twilio, SMTP), until SIGINT/SIGTERM (`callpanion emulators`).

    Their settings go to `env_file` (default `<folder>/emulators.env`) as well as to the
    output. With `webhook_url`, conversations end with a signed post-call webhook sent there;
    with `twilio_inbound_url`, simulated SMS replies are posted there (signed). In `fast`
    mode Twilio posts no status callbacks (benchmarks measure acceptance only).
    """
    suite = EmulatorSuite(folder, fast=fast, fcm_port=fcm_port, apns_port=apns_port)
    await suite.start()
    alerts = AlertEmulators(
        folder / "alerts", inbound_url=twilio_inbound_url, twilio_callbacks=not fast
    )
    await alerts.start()
    agent_id = "agent_" + secrets.token_hex(8)
    elevenlabs = ElevenLabsEmulator(
        api_key="xi-" + secrets.token_hex(16),
        agent_ids=[agent_id],
        port=elevenlabs_port,
        webhook_url=webhook_url,
        webhook_secret="wsec_" + secrets.token_hex(16),
    )
    elevenlabs_url = elevenlabs.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    env = {
        **suite.env(),
        **alerts.env(),
        "ELEVENLABS_BASE_URL": elevenlabs_url,
        "ELEVENLABS_API_KEY": elevenlabs.api_key,
        "ELEVENLABS_AGENT_ID": agent_id,
        "ELEVENLABS_WEBHOOK_SECRET": elevenlabs.webhook_secret or "",
    }
    written = write_env_file(env_file or folder / ENV_FILE_NAME, env)
    if as_json:
        announce(json.dumps(env))
    else:
        mode = "fast mode (no verification)" if fast else "verifying every request"
        announce(f"emulators running, {mode}; credentials in {folder}")
        announce(f"  FCM + OAuth: {env['FCM_BASE_URL']} (token endpoint /token)")
        announce(f"  APNs:        https://{env['APNS_HOST']}:{env['APNS_PORT']}")
        announce(f"  ElevenLabs:  {elevenlabs_url} (GET /v1/convai/conversation/token)")
        announce(f"  post-call webhooks go to: {webhook_url or '(nowhere: no --webhook-url)'}")
        announce(f"  Web Push:    {env['CALLPANION_EMULATED_WEBPUSH_URL']} (POST /push/<id>)")
        announce(f"  Twilio:      {env['TWILIO_BASE_URL']} (replies go to {twilio_inbound_url})")
        announce(f"  SMTP:        localhost:{env['SMTP_PORT']} (STARTTLS, AUTH); inbox at")
        announce(f"               {env['CALLPANION_EMULATED_SMTP_ADMIN_URL']}/_emulator/inbox")
        announce("  admin: GET /_emulator/deliveries, GET /_emulator/inbox, POST|DELETE")
        announce("         /_emulator/faults, POST /_emulator/tokens, POST /_emulator/reset")
        announce(f"settings written to {written}; point the worker and the API at them with:")
        announce(f"  .venv/bin/callpanion --env-file {written} worker")
        announce(f"  .venv/bin/callpanion --env-file {written} api")
    try:
        await stop.wait()
    finally:
        elevenlabs.stop()
        await alerts.stop()
        await suite.stop()
