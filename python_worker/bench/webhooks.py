"""`callpanion bench webhooks`: what a real post-call audio webhook weighs, and what a flood of
large unsigned webhooks does to the API's memory (issue 25, item 4).

Two measurements, both printed as figures:

- **size**: a conversation of `--minutes` is encoded as a real MP3 with LAME (the `lame`
  command, Debian package `lame`), constant bit rate, mono 44.1 kHz, at each `--bitrate`, and
  wrapped in a `post_call_audio` event exactly as ElevenLabs sends it (base64 in
  `data.full_audio`, python_worker.emulators.elevenlabs.audio_payload). Printed: MP3 bytes,
  webhook body bytes, bytes per minute of call, and the longest call each bit rate fits in
  under the API's cap. The audio is noise with pauses: at a constant bit rate the MP3's size
  depends on the duration and the rate only, never on what is said.
- **flood**: `callpanion api` (from this checkout, or `--api-checkout DIR` to measure another,
  such as the code before the fix) as a child process on a migrated database of its own in
  the local cluster; `--posts` concurrent POSTs of `--body-mib` MiB each, with a fresh `t` and
  a zero `v0` (unsigned: all must be refused), while `/healthz` is asked every 50 ms. Printed:
  the API's RSS at rest, its peak (VmHWM) and its RSS afterwards, the answers' statuses, and
  `/healthz`'s latency during the flood (median, max). Loopback only, bounded in count.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from python_worker.emulators.elevenlabs import audio_payload
from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack, free_port

SAMPLE_RATE = 44_100
#: The API's default CALLPANION_WEBHOOK_MAX_BYTES (benchmarks do not import the API's code:
#: they run it as a process).
WEBHOOK_CAP = 64 * 1024 * 1024
#: How often the flood's /healthz probe asks, and the API's memory is read.
PROBE_INTERVAL_S = 0.05
#: The API is given this long after the flood to hand memory back before "after" is read.
SETTLE_S = 2.0


@dataclass(frozen=True)
class AudioSize:
    minutes: float
    bitrate_kbps: int
    mp3_bytes: int
    webhook_bytes: int

    @property
    def per_minute(self) -> float:
        return self.webhook_bytes / self.minutes


def _pcm(minutes: float) -> Iterator[bytes]:
    """16-bit mono PCM: turns of noise (speech stands in) with half-second pauses."""
    second = SAMPLE_RATE * 2
    total = int(minutes * 60)
    for index in range(total):
        yield os.urandom(second) if index % 8 else bytes(second // 2) + os.urandom(second // 2)


def encode_mp3(minutes: float, bitrate_kbps: int) -> bytes:
    """A real MP3 of that length from LAME, constant bit rate."""
    lame = shutil.which("lame")
    if lame is None:
        raise CallPanionError("`lame` is needed for the size measurement: apt-get install lame")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "call.mp3"
        process = subprocess.Popen(
            [lame, "--quiet", "-r", "-s", "44.1", "--bitwidth", "16", "--signed", "--little-endian",
             "-m", "m", "--cbr", "-b", str(bitrate_kbps), "-", str(out)],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None
        for chunk in _pcm(minutes):
            process.stdin.write(chunk)
        process.stdin.close()
        if process.wait() != 0:
            raise CallPanionError(f"lame failed with exit code {process.returncode}")
        return out.read_bytes()


def measure_size(minutes: float, bitrate_kbps: int) -> AudioSize:
    """The MP3 and the whole post_call_audio body for one call of `minutes`."""
    mp3 = encode_mp3(minutes, bitrate_kbps)
    body = json.dumps(audio_payload("conv_" + "0" * 24, mp3)).encode()
    assert len(body) >= len(base64.b64encode(mp3))
    return AudioSize(minutes, bitrate_kbps, len(mp3), len(body))


def report_sizes(sizes: list[AudioSize], cap: int) -> str:
    lines = [
        f"post_call_audio webhook bodies (real MP3 from LAME, CBR mono 44.1 kHz; cap {cap} bytes"
        f" = {cap / 2**20:.0f} MiB)",
        f"{'minutes':>8} {'kbps':>5} {'mp3 bytes':>12} {'body bytes':>12} {'MiB/min':>8}"
        f" {'fits (min)':>10}",
    ]
    for s in sizes:
        lines.append(
            f"{s.minutes:>8g} {s.bitrate_kbps:>5} {s.mp3_bytes:>12} {s.webhook_bytes:>12}"
            f" {s.per_minute / 2**20:>8.3f} {cap / s.per_minute:>10.0f}"
        )
    return "\n".join(lines)


@dataclass
class FloodResult:
    label: str
    rss_rest_kb: int
    rss_peak_kb: int
    rss_after_kb: int
    statuses: Counter[int]
    health_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def api_process(
    checkout: Path, database_url: str, secret: str, extra: dict[str, str] | None = None
) -> Iterator[tuple[int, str]]:
    """`callpanion api` from `checkout` as a child process; yields (pid, base URL)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CALLPANION_", "ELEVENLABS_", "FCM_", "APNS_"))}  # fmt: skip
    env |= {
        "PYTHONPATH": str(checkout),
        "CALLPANION_API_PORT": str(port),
        "CALLPANION_API_DATABASE_URL": database_url,
        "ELEVENLABS_WEBHOOK_SECRET": secret,
        "CALLPANION_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }
    with tempfile.TemporaryDirectory() as folder:  # no stray .env
        process = subprocess.Popen(
            [sys.executable, "-m", "python_worker", "api"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not _healthy(url + "/healthz"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise CallPanionError("the API did not start")
                time.sleep(0.1)
            yield process.pid, url
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def flood(label: str, pid: int, url: str, posts: int, body_mib: int) -> FloodResult:
    """`posts` concurrent unsigned posts of `body_mib` MiB; memory and /healthz meanwhile."""
    body = os.urandom(body_mib * 2**20 // 2).hex().encode()  # one shared buffer
    rest, _ = _memory(pid)
    result = FloodResult(label, rest, 0, 0, Counter())
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    client.get("/healthz")
                result.health_ms.append((time.perf_counter() - started) * 1000)
                done.wait(PROBE_INTERVAL_S)

    def post(_: int) -> None:
        header = f"t={int(time.time())},v0={'0' * 64}"
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                status = client.post(
                    "/v1/webhooks/elevenlabs",
                    content=body,
                    headers={"ElevenLabs-Signature": header, "content-type": "application/json"},
                ).status_code
        except httpx.HTTPError:
            status = 0  # the server closed the connection without an answer
        result.statuses[status] += 1

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    threads = [threading.Thread(target=post, args=(i,)) for i in range(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    done.set()
    prober.join()
    time.sleep(SETTLE_S)  # a benchmark, not a test: give the allocator its moment
    result.rss_after_kb, result.rss_peak_kb = _memory(pid)
    return result


def report_flood(results: list[FloodResult], posts: int, body_mib: int) -> str:
    lines = [
        f"{posts} concurrent unsigned webhooks of {body_mib} MiB each (fresh t, zero v0)",
        f"{'api':<28} {'rest MB':>8} {'peak MB':>8} {'after MB':>9} {'healthz p50/max ms':>19}"
        f" {'s':>6}  statuses",
    ]
    for r in results:
        health = sorted(r.health_ms) or [0.0]
        lines.append(
            f"{r.label:<28} {r.rss_rest_kb / 1024:>8.0f} {r.rss_peak_kb / 1024:>8.0f}"
            f" {r.rss_after_kb / 1024:>9.0f} {statistics.median(health):>9.1f}/{max(health):<9.1f}"
            f" {r.seconds:>6.1f}  {dict(sorted(r.statuses.items()))}"
        )
    return "\n".join(lines)


def bench_webhooks(
    stack: LocalStack | None,
    minutes: float,
    bitrates: list[int],
    posts: int,
    body_mib: int,
    checkouts: list[Path],
) -> str:
    """Both measurements (the flood only with a stack), as printed text."""
    out = [report_sizes([measure_size(minutes, b) for b in bitrates], WEBHOOK_CAP)]
    if stack is not None and posts > 0:
        results = []
        with stack.scratch_database("bench_webhooks") as database_url:
            for checkout in checkouts:
                with api_process(checkout, database_url, "wsec_" + os.urandom(16).hex()) as (
                    pid,
                    url,
                ):
                    results.append(flood(str(checkout), pid, url, posts, body_mib))
        out.append(report_flood(results, posts, body_mib))
    return "\n\n".join(out)
