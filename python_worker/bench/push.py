"""`callpanion bench push --count N`: our senders beside the peers a Python team would pick.

The emulators run in fast mode in a child process (so they do not share our interpreter lock),
on TLS over loopback. In one run, for each provider, N pushes are sent by:

- APNs: our `ApnsSender` and aioapns (`APNs.send_notification`, the same key, CA and emulator);
- FCM: our `FcmSender` and firebase-admin's `messaging.send_each_async` (batches of 500, the
  API's limit, all batches in flight at once).

Each client first sends a warm-up batch (connections, TLS, OAuth token) that is not timed;
then N pushes are timed from the first send to the last answer. Rounds alternate the order of
ours and the peer; the median of the rounds is reported. After every timed run the emulator's
own count is read back: every push must have arrived exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_worker.emulators.process import admin_request, emulator_process
from python_worker.errors import CallPanionError
from python_worker.push.apns import ApnsSender
from python_worker.push.fcm import FcmSender

WARM_UP = 200
FIREBASE_BATCH = 500  # send_each_async takes at most 500 messages per call
VOIP_PAYLOAD = json.dumps(
    {
        "aps": {},
        "id": "6f1c7c1e-8f1e-4a53-9d7c-5c4f0d7a8f10",
        "nameCaller": "CallPanion",
        "handle": "Mum",
        "type": 0,
        "duration": 45000,
        "expires_at": "2031-01-06T09:31:00Z",
        "extra": {"call_session_id": "6f1c7c1e-8f1e-4a53-9d7c-5c4f0d7a8f10"},
    }
).encode()
FCM_DATA = {
    k: v if isinstance(v, str) else json.dumps(v)
    for k, v in json.loads(VOIP_PAYLOAD).items()
    if k != "aps"
}


@dataclass
class Run:
    client: str
    provider: str
    count: int = 0
    seconds: list[float] = field(default_factory=list)
    delivered_ok: bool = True

    @property
    def per_second(self) -> float:
        return self.count / statistics.median(self.seconds) if self.seconds else 0.0


@dataclass
class PushBench:
    count: int
    rounds: int
    runs: dict[str, Run]
    emulator_capacity: dict[str, float]

    def ratio(self, ours: str, peer: str) -> float:
        peer_rate = self.runs[peer].per_second
        return self.runs[ours].per_second / peer_rate if peer_rate else float("inf")


# -- checks ----------------------------------------------------------------------------------


def _check_delivered(base_url: str, ca_file: str, expected: int, key: str) -> bool:
    """True when the emulator counted `expected` pushes, each with a distinct id."""
    seen = admin_request(base_url, ca_file, "GET", "/_emulator/deliveries")
    deliveries = seen["deliveries"]
    assert isinstance(deliveries, list)
    ids = {d[key] for d in deliveries}
    return seen["count"] == expected and len(ids) == expected


# -- the clients -----------------------------------------------------------------------------


def _tokens(n: int) -> list[str]:
    return [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(n)]


async def _timed(send_all: Callable[[int], Awaitable[int]], count: int) -> float:
    await send_all(WARM_UP)
    start = time.perf_counter()
    delivered = await send_all(count)
    elapsed = time.perf_counter() - start
    if delivered != count:
        raise CallPanionError(f"only {delivered} of {count} pushes were accepted")
    return elapsed


async def _ours_apns(env: dict[str, str], count: int) -> float:
    sender = ApnsSender.from_file(
        env["APNS_KEY_FILE"],
        env["APNS_KEY_ID"],
        env["APNS_TEAM_ID"],
        env["APNS_BUNDLE_ID"],
        host=env["APNS_HOST"],
        port=int(env["APNS_PORT"]),
        ca_file=env["APNS_CA_FILE"],
    )

    async def send_all(n: int) -> int:
        results = await asyncio.gather(
            *(
                sender.send_voip(t, VOIP_PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
                for t in _tokens(n)
            )
        )
        return sum(r.delivered for r in results)

    try:
        return await _timed(send_all, count)
    finally:
        await sender.aclose()


async def _aioapns(env: dict[str, str], count: int) -> float:
    import logging

    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    # aioapns logs a warning for every send that waits for a free stream: keep the table clean.
    logging.getLogger("aioapns").setLevel(logging.ERROR)

    client = APNs(
        key=Path(env["APNS_KEY_FILE"]).read_text(),
        key_id=env["APNS_KEY_ID"],
        team_id=env["APNS_TEAM_ID"],
        topic=env["APNS_BUNDLE_ID"] + ".voip",
        ssl_context=ssl.create_default_context(cafile=env["APNS_CA_FILE"]),
    )

    class EmulatorProtocol(APNsProductionClientProtocol):
        APNS_SERVER = env["APNS_HOST"]
        APNS_PORT = int(env["APNS_PORT"])

    client.pool.protocol_class = EmulatorProtocol
    message = json.loads(VOIP_PAYLOAD)

    async def send_all(n: int) -> int:
        results = await asyncio.gather(
            *(
                client.send_notification(
                    NotificationRequest(
                        device_token=t,
                        message=message,
                        priority=10,
                        time_to_live=0,
                        push_type=PushType.VOIP,
                    )
                )
                for t in _tokens(n)
            )
        )
        return sum(r.is_successful for r in results)

    try:
        return await _timed(send_all, count)
    finally:
        client.pool.close()


async def _ours_fcm(env: dict[str, str], count: int) -> float:
    sender = FcmSender.from_file(
        env["FCM_SERVICE_ACCOUNT_FILE"], base_url=env["FCM_BASE_URL"], ca_file=env["FCM_CA_FILE"]
    )

    async def send_all(n: int) -> int:
        results = await asyncio.gather(
            *(
                sender.send(
                    {
                        "token": "fcm_" + t,
                        "data": FCM_DATA,
                        "android": {"priority": "high", "ttl": "45s"},
                    }
                )
                for t in _tokens(n)
            )
        )
        return sum(r.delivered for r in results)

    try:
        return await _timed(send_all, count)
    finally:
        await sender.aclose()


def _firebase_admin(env: dict[str, str], count: int) -> float:
    import warnings

    import firebase_admin
    from firebase_admin import credentials, messaging

    warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
    # google-auth (requests) and firebase-admin's httpx client read these at creation.
    os.environ["REQUESTS_CA_BUNDLE"] = env["FCM_CA_FILE"]
    os.environ["SSL_CERT_FILE"] = env["FCM_CA_FILE"]
    app = firebase_admin.initialize_app(
        credentials.Certificate(env["FCM_SERVICE_ACCOUNT_FILE"]), name=f"bench-{uuid.uuid4()}"
    )
    service = messaging._get_messaging_service(app)
    project = json.loads(Path(env["FCM_SERVICE_ACCOUNT_FILE"]).read_text())["project_id"]
    service._fcm_url = f"{env['FCM_BASE_URL']}/v1/projects/{project}/messages:send"

    async def send_all(n: int) -> int:
        messages = [
            messaging.Message(
                token="fcm_" + t,
                data=FCM_DATA,
                android=messaging.AndroidConfig(priority="high", ttl=45),
            )
            for t in _tokens(n)
        ]
        batches = [messages[i : i + FIREBASE_BATCH] for i in range(0, n, FIREBASE_BATCH)]
        responses = await asyncio.gather(*(messaging.send_each_async(b, app=app) for b in batches))
        return sum(r.success_count for r in responses)

    async def timed() -> float:
        try:
            return await _timed(send_all, count)
        finally:
            # Its connections belong to this loop: close them here, before the loop ends.
            await service._async_client.aclose()

    try:
        return asyncio.run(timed())
    finally:
        firebase_admin.delete_app(app)  # closes its client with asyncio.run: outside any loop


def _in_a_loop(
    runner: Callable[[dict[str, str], int], Coroutine[Any, Any, float]],
) -> Callable[[dict[str, str], int], float]:
    return lambda env, count: asyncio.run(runner(env, count))


CLIENTS: dict[str, tuple[str, Callable[[dict[str, str], int], float], str]] = {
    # name: (provider, runner, delivery id field in the emulator's record)
    "ours (APNs)": ("apns", _in_a_loop(_ours_apns), "apns_id"),
    "aioapns": ("apns", _in_a_loop(_aioapns), "apns_id"),
    "ours (FCM)": ("fcm", _in_a_loop(_ours_fcm), "message_id"),
    "firebase-admin send_each_async": ("fcm", _firebase_admin, "message_id"),
}


def _h2load_capacity(env: dict[str, str], count: int) -> dict[str, float]:
    """Requests/s the fast-mode APNs emulator serves to h2load (Debian nghttp2-client)."""
    h2load = shutil.which("h2load")
    if h2load is None:
        return {}
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as body:
        body.write(VOIP_PAYLOAD)
        body.flush()
        out = subprocess.run(
            [
                h2load,
                "-n",
                str(count),
                "-c",
                "1",
                "-m",
                "100",
                "-d",
                body.name,
                "-H",
                "apns-push-type: voip",
                "-H",
                "apns-topic: x.voip",
                f"https://localhost:{env['APNS_PORT']}/3/device/{'ab' * 32}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        ).stdout
    rate: float | None = None
    succeeded = 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            # "finished in 1.23s, 8123.45 req/s, 1.2MB/s"
            rate = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            # "requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, ..."
            succeeded = int(line.split(",")[3].split()[0])
    if rate is None or succeeded != count:
        return {}
    return {"h2load_apns_req_per_s": rate}


def bench_push(count: int, rounds: int) -> PushBench:
    """Run every client `rounds` times on `count` pushes against fast-mode emulators."""
    runs = {name: Run(name, provider) for name, (provider, _, _) in CLIENTS.items()}
    with (
        tempfile.TemporaryDirectory(prefix="callpanion-bench-") as tmp,
        emulator_process(Path(tmp)) as env,
    ):
        bases = {"apns": f"https://localhost:{env['APNS_PORT']}", "fcm": env["FCM_BASE_URL"]}
        ca = env["APNS_CA_FILE"]
        pairs = [("ours (APNs)", "aioapns"), ("ours (FCM)", "firebase-admin send_each_async")]
        for round_number in range(rounds):
            for pair in pairs:
                order = pair if round_number % 2 == 0 else pair[::-1]
                for name in order:
                    provider, runner, key = CLIENTS[name]
                    admin_request(bases[provider], ca, "POST", "/_emulator/reset")
                    seconds = runner(env, count)
                    run = runs[name]
                    run.seconds.append(seconds)
                    run.count = count
                    run.delivered_ok &= _check_delivered(bases[provider], ca, count + WARM_UP, key)
        capacity = _h2load_capacity(env, max(count, 20_000))
    return PushBench(count, rounds, runs, capacity)


def report_push(result: PushBench) -> str:
    """A readable table, then one JSON line with the figures."""
    lines = [
        f"push throughput, {result.count:,} pushes per run, median of {result.rounds} rounds,"
        " emulators in fast mode (TLS, loopback, child process)",
        f"{'client':<34}{'pushes/s':>10}   {'runs (s)':<28}{'each once':>10}",
    ]
    for run in result.runs.values():
        seconds = ", ".join(f"{s:.2f}" for s in run.seconds)
        lines.append(
            f"{run.client:<34}{run.per_second:>10,.0f}   {seconds:<28}"
            f"{'yes' if run.delivered_ok else 'NO':>10}"
        )
    apns_ratio = result.ratio("ours (APNs)", "aioapns")
    fcm_ratio = result.ratio("ours (FCM)", "firebase-admin send_each_async")
    lines.append(f"APNs: ours / aioapns = {apns_ratio:.2f}x")
    lines.append(f"FCM:  ours / firebase-admin = {fcm_ratio:.2f}x")
    for name, value in result.emulator_capacity.items():
        lines.append(f"emulator capacity ({name}): {value:,.0f}")
    lines.append(
        json.dumps(
            {
                "count": result.count,
                "apns": {
                    "ours_per_s": round(result.runs["ours (APNs)"].per_second, 1),
                    "aioapns_per_s": round(result.runs["aioapns"].per_second, 1),
                    "ratio": round(apns_ratio, 3),
                },
                "fcm": {
                    "ours_per_s": round(result.runs["ours (FCM)"].per_second, 1),
                    "firebase_admin_per_s": round(
                        result.runs["firebase-admin send_each_async"].per_second, 1
                    ),
                    "ratio": round(fcm_ratio, 3),
                },
                "all_delivered_once": all(r.delivered_ok for r in result.runs.values()),
                **{k: round(v, 1) for k, v in result.emulator_capacity.items()},
            }
        )
    )
    return "\n".join(lines)
