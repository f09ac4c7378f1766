"""`callpanion bench dispatch --calls N [--workers K]`: the worker end to end, on time or late.

N calls (half iOS -> APNs VoIP, half Android -> FCM, each device its own token) fall due at
the same whole second. Everything is real but the providers: a dedicated database in the local
cluster, migrated like the real one and dropped afterwards (the demo data is untouched, and
pg_cron, which runs only in the main database, never moves its queue); K `callpanion worker`
processes (CALLPANION_LOG_LEVEL=WARNING); the FCM and APNs emulators in fast mode in a child
process, on TLS over loopback.

The workers are started and healthy (/healthz) first; then the calls are queued in one
transaction, due a whole second far enough ahead for the inserts to commit before the workers
claim (CALLPANION_CLAIM_AHEAD_MS ahead of send_at). Measured per round:

- lateness of every call: when the emulator received its push minus its send_at
  (p50, p99, max; a token delivered twice counts from its first delivery);
- pushes/s: calls delivered / (last delivery - send_at): the rate of the send phase, whose
  claims started up to the claim-ahead earlier;
- duplicates: tokens delivered more than once; lost: rows not `sent` once nothing is pending
  (or after a timeout);
- after the last round, the peak RSS (VmHWM) of each worker, read just before it is stopped;
- per call: the workers' CPU (user + system, from /proc) and the emulators' CPU (the sink's
  cost, to show it is not the bottleneck), and the time the workers waited for their claims
  and their records (`callpanion_db_seconds_total`), divided by the calls of the round.

Rounds reuse the workers, so the first round also pays for connections, TLS and the OAuth
token (cold), later rounds do not; the summary takes the median round. Everything started
here is stopped on the way out, error or Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from python_worker.emulators.process import admin_request, emulator_process
from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack, free_port

#: The calls fall due at least this long after the queueing starts, plus QUEUE_LEAD_PER_CALL_S
#: a call (inserting 10k calls takes well under a second here), rounded up to a whole second.
QUEUE_LEAD_S = 2.0
QUEUE_LEAD_PER_CALL_S = 0.0002
#: How long to wait for every row to leave queued/due/claimed: past the default lease (30 s),
#: so a row a dead worker held comes back and is counted as sent or lost, not as pending.
SETTLE_TIMEOUT_S = 45.0
SETTLE_TIMEOUT_PER_CALL_S = 0.002
WORKER_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 30.0

Row = dict[str, object]
Conn = psycopg.Connection[Row]

# One household of N relatives, each with one active device: even ones iOS (a VoIP token),
# odd ones Android (an FCM token). Tokens are unique per device, so a push maps to its row.
_SETUP = """
with h as (
  insert into households (name) values ('The Benchmarks') returning id
),
r as (
  insert into relatives (household_id, display_name, timezone)
  select h.id, 'Gran ' || i, 'UTC' from h, generate_series(1, %(n)s) i
  returning id, household_id
),
numbered as (
  select id, household_id, row_number() over () %% 2 = 0 as ios from r
)
insert into device_pairs (household_id, relative_id, status, platform, voip_token, fcm_token,
                          secret_hash, paired_at)
select household_id, id, 'active', case when ios then 'ios' else 'android' end,
       case when ios then md5(id::text) || md5(household_id::text) end,
       case when not ios then 'bench:' || md5(id::text) || md5(household_id::text) end,
       'h', now()
from numbered
"""

# One call now for every bench device, due at %(send_at)s, queued as `call now` queues it.
_QUEUE = """
with s as (
  insert into call_sessions (household_id, relative_id, device_id, occurrence_at, origin, status)
  select d.household_id, d.relative_id, d.id, %(send_at)s, 'call_now', 'queued'
  from device_pairs d where d.status = 'active'
  returning id, household_id, relative_id, occurrence_at
)
insert into notification_queue (call_session_id, household_id, device_id, occurrence_at, status,
  send_at, deadline_at, platform, provider, push_token, fallback_provider, fallback_token,
  payload)
select s.id, s.household_id, t.device_id, s.occurrence_at, 'queued', s.occurrence_at,
       s.occurrence_at + interval '2 minutes', t.platform, t.provider, t.push_token,
       t.fallback_provider, t.fallback_token,
       private.call_payload('Gran', 'The Benchmarks', 'Morning call', interval '45 seconds')
from s join private.call_targets t on t.relative_id = s.relative_id
"""

_PENDING = "select count(*) as n from notification_queue where status in ('queued','due','claimed')"
_OUTCOME = "select push_token, send_at, status from notification_queue"
_CLEAR = "delete from call_sessions"  # cascades to the queue rows
_VACUUM = "vacuum (analyze) call_sessions, notification_queue, device_pairs, relatives"


@dataclass
class Round:
    """One burst of `calls` calls due at the same second."""

    calls: int
    lateness_s: list[float]  # one per delivered call, sorted
    span_s: float  # last delivery - send_at
    duplicates: int
    lost: int
    #: Per call, in milliseconds: worker CPU, sink (emulators) CPU, claim wait, record wait.
    worker_cpu_ms: float = 0.0
    sink_cpu_ms: float = 0.0
    claim_ms: float = 0.0
    record_ms: float = 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the lateness: 0.0 the first push, 1.0 the last (0 when
        nothing was delivered)."""
        if not self.lateness_s:
            return 0.0
        rank = max(1, math.ceil(q * len(self.lateness_s)))
        return self.lateness_s[rank - 1]

    @property
    def pushes_per_s(self) -> float:
        return len(self.lateness_s) / self.span_s if self.span_s > 0 else 0.0


@dataclass
class DispatchBench:
    calls: int
    workers: int
    rounds: list[Round]
    peak_rss_mb: list[float]  # VmHWM of each worker
    warnings: Counter[str] = field(default_factory=Counter)  # the workers' warnings, by message
    claim_ahead_s: float = 0.0

    def median(self, figure: str) -> float:
        values = {
            "p50": [r.percentile(0.50) for r in self.rounds],
            "p99": [r.percentile(0.99) for r in self.rounds],
            "max": [r.percentile(1.0) for r in self.rounds],
            "pushes_per_s": [r.pushes_per_s for r in self.rounds],
            "worker_cpu_ms": [r.worker_cpu_ms for r in self.rounds],
            "sink_cpu_ms": [r.sink_cpu_ms for r in self.rounds],
            "claim_ms": [r.claim_ms for r in self.rounds],
            "record_ms": [r.record_ms for r in self.rounds],
        }[figure]
        return statistics.median(values)

    def summary(self) -> dict[str, object]:
        """The JSON figures: medians over rounds; duplicates and lost summed; RSS the max."""
        return {
            "calls": self.calls,
            "workers": self.workers,
            "p50_s": round(self.median("p50"), 4),
            "p99_s": round(self.median("p99"), 4),
            "max_s": round(self.median("max"), 4),
            "pushes_per_s": round(self.median("pushes_per_s"), 1),
            "duplicates": sum(r.duplicates for r in self.rounds),
            "lost": sum(r.lost for r in self.rounds),
            "peak_rss_mb": round(max(self.peak_rss_mb, default=0.0), 1),
            "worker_cpu_ms_per_call": round(self.median("worker_cpu_ms"), 4),
            "sink_cpu_ms_per_call": round(self.median("sink_cpu_ms"), 4),
            "claim_ms_per_call": round(self.median("claim_ms"), 4),
            "record_ms_per_call": round(self.median("record_ms"), 4),
        }


# -- the workers -----------------------------------------------------------------------------


@dataclass
class BenchWorker:
    """One `callpanion worker` process started by the bench."""

    worker_id: str
    http_port: int
    log_file: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def healthy(self) -> bool:
        return self.health() is not None

    def health(self) -> dict[str, object] | None:
        """The worker's /healthz answer when it is healthy, else None."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status != 200:
                    return None
                details: dict[str, object] = json.loads(response.read())
                return details
        except OSError:
            return None

    def claim_ahead_s(self) -> float:
        """The claim-ahead the worker runs with, as it reports it."""
        details = self.health() or {}
        value = details.get("claim_ahead_s")
        if not isinstance(value, int | float):
            raise CallPanionError(f"{self.worker_id}'s /healthz has no claim_ahead_s: {details}")
        return float(value)

    def db_seconds(self) -> dict[str, float]:
        """`callpanion_db_seconds_total` by call (claim, record), from /metrics."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith('callpanion_db_seconds_total{call="'):
                call = line.split('"', 2)[1]
                out[call] = float(line.rsplit(" ", 1)[1])
        return out

    def peak_rss_mb(self) -> float:
        """VmHWM (the resident set's high-water mark) from /proc, in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise CallPanionError(f"no VmHWM in /proc/{self.process.pid}/status")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def warnings(self) -> Counter[str]:
        """The worker's warning and error log lines, counted by message."""
        found: Counter[str] = Counter()
        if self.log_file.exists():
            for line in filter(None, self.log_file.read_text(errors="replace").splitlines()):
                try:
                    record = json.loads(line)
                except ValueError:
                    found[line[:120]] += 1  # not ours: a traceback, say
                    continue
                if isinstance(record, dict) and record.get("level") in ("warning", "error"):
                    error = f" ({str(record['error'])[:100]})" if record.get("error") else ""
                    found[f"{record['level']}: {record.get('msg')}{error}"] += 1
        return found

    def terminate(self) -> None:
        """SIGTERM: stop claiming, finish sends, give back the rest, exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def worker_env(
    base: Mapping[str, str],
    providers: Mapping[str, str],
    database_url: str,
    worker_id: str,
    http_port: int,
) -> dict[str, str]:
    """A worker's environment: ours (so CALLPANION_BATCH_SIZE and the like still tune it), the
    emulators' FCM_* / APNS_*, the bench database, its own id and port, warnings only."""
    env = dict(base)
    env.update(providers)
    env.update(
        {
            "CALLPANION_WORKER_DATABASE_URL": database_url,
            "CALLPANION_WORKER_ID": worker_id,
            "CALLPANION_WORKER_HTTP_PORT": str(http_port),
            "CALLPANION_LOG_LEVEL": "WARNING",
        }
    )
    return env


def wait_until_healthy(workers: list[BenchWorker]) -> None:
    """Return once every worker answers /healthz; raise with its log if one exits or is slow."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    for worker in workers:
        while not worker.healthy():
            if worker.process.poll() is not None:
                raise CallPanionError(
                    f"{worker.worker_id} exited with {worker.process.returncode}:\n"
                    + worker.log_tail()
                )
            if time.monotonic() > deadline:
                raise CallPanionError(f"{worker.worker_id} was not healthy in time")
            time.sleep(0.05)


@contextlib.contextmanager
def running_workers(
    count: int,
    providers: Mapping[str, str],
    database_url: str,
    folder: Path,
    worker_checkout: Path | None = None,
) -> Iterator[list[BenchWorker]]:
    """`count` workers, healthy before this yields; every one stopped on the way out.
    `worker_checkout`: run another checkout's worker code (no bytecode written there)."""
    started: list[BenchWorker] = []
    try:
        for n in range(1, count + 1):
            worker_id, port = f"bench-worker-{n}", free_port()
            log_file = folder / f"{worker_id}.log"
            env = worker_env(os.environ, providers, database_url, worker_id, port)
            if worker_checkout is not None:
                env["PYTHONPATH"] = str(worker_checkout.resolve())
                env["PYTHONDONTWRITEBYTECODE"] = "1"
            with log_file.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, "-m", "python_worker", "worker"],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=folder,  # no stray .env is picked up
                )
            started.append(BenchWorker(worker_id, port, log_file, process))
        wait_until_healthy(started)
        yield started
    finally:
        for worker in started:  # all at once: they finish their sends in parallel
            worker.terminate()
        for worker in started:
            worker.stop()


# -- one round -------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(marker: str) -> int | None:
    """The pid of this process's child whose command line contains `marker` (the emulators)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and marker in cmdline and "emulators" in cmdline:
            return int(entry.name)
    return None


@dataclass
class Probes:
    """Where a round reads its costs: the workers and the emulators' process."""

    workers: list[BenchWorker]
    sink_pid: int | None

    def read(self) -> tuple[float, float, float, float]:
        """Worker CPU s, sink CPU s, claim wait s, record wait s, so far."""
        waits = [w.db_seconds() for w in self.workers]
        return (
            sum(cpu_s(w.process.pid) for w in self.workers),
            cpu_s(self.sink_pid) if self.sink_pid else 0.0,
            sum(w.get("claim", 0.0) for w in waits),
            sum(w.get("record", 0.0) for w in waits),
        )


def _queue(conn: Conn, calls: int, claim_ahead_s: float) -> dt.datetime:
    """Queue one call per bench device, all due at one whole second; returns that second."""
    lead = QUEUE_LEAD_S + calls * QUEUE_LEAD_PER_CALL_S
    send_at = dt.datetime.fromtimestamp(math.ceil(time.time() + lead), dt.UTC)
    with conn.transaction():
        queued = conn.execute(_QUEUE, {"send_at": send_at}).rowcount
    if queued != calls:
        raise CallPanionError(f"queued {queued} calls, expected {calls}")
    if time.time() > send_at.timestamp() - claim_ahead_s:
        raise CallPanionError(
            "queueing the calls took longer than the lead time; the workers may have started"
            " late (raise QUEUE_LEAD_S)"
        )
    return send_at


def _settle(conn: Conn, timeout_s: float) -> None:
    """Wait until no row is queued, due or claimed (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(_PENDING).fetchone()
        if row is not None and row["n"] == 0:
            return
        time.sleep(0.1)


def _deliveries(providers: Mapping[str, str]) -> list[tuple[str, float]]:
    """(token, received_at) of every push both emulators accepted."""
    ca = providers["APNS_CA_FILE"]
    out: list[tuple[str, float]] = []
    for base in (f"https://localhost:{providers['APNS_PORT']}", providers["FCM_BASE_URL"]):
        seen = admin_request(base, ca, "GET", "/_emulator/deliveries", timeout=120)
        deliveries = seen["deliveries"]
        assert isinstance(deliveries, list)
        out.extend((str(d["token"]), float(d["received_at"])) for d in deliveries)
    return out


def _reset(providers: Mapping[str, str]) -> None:
    ca = providers["APNS_CA_FILE"]
    for base in (f"https://localhost:{providers['APNS_PORT']}", providers["FCM_BASE_URL"]):
        admin_request(base, ca, "POST", "/_emulator/reset")


def run_round(
    conn: Conn,
    providers: Mapping[str, str],
    calls: int,
    claim_ahead_s: float,
    probes: Probes | None = None,
) -> Round:
    """Queue `calls` calls due at one second, let the workers send them, measure."""
    conn.execute(_CLEAR)
    conn.execute(_VACUUM)
    _reset(providers)
    before = probes.read() if probes else (0.0, 0.0, 0.0, 0.0)
    send_at = _queue(conn, calls, claim_ahead_s)
    _settle(conn, SETTLE_TIMEOUT_S + calls * SETTLE_TIMEOUT_PER_CALL_S)
    after = probes.read() if probes else before
    per_call_ms = [(b - a) * 1000 / calls for a, b in zip(before, after, strict=True)]
    rows = conn.execute(_OUTCOME).fetchall()
    first: dict[str, float] = {}
    times: dict[str, int] = {}
    for token, received_at in _deliveries(providers):
        times[token] = times.get(token, 0) + 1
        first[token] = min(received_at, first.get(token, received_at))
    due = send_at.timestamp()
    lateness = sorted(first[str(r["push_token"])] - due for r in rows if r["push_token"] in first)
    return Round(
        calls=calls,
        lateness_s=lateness,
        span_s=max(first.values(), default=due) - due,
        duplicates=sum(1 for n in times.values() if n > 1),
        lost=sum(1 for r in rows if r["status"] != "sent"),
        worker_cpu_ms=per_call_ms[0],
        sink_cpu_ms=per_call_ms[1],
        claim_ms=per_call_ms[2],
        record_ms=per_call_ms[3],
    )


# -- the whole bench ---------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(stack: LocalStack, worker_checkout: Path | None) -> Iterator[str]:
    """A scratch database migrated from this checkout or `worker_checkout`; dropped after."""
    from python_worker.bench.claim_cost import migrated_database

    url = migrated_database(stack, worker_checkout)
    try:
        yield url
    finally:
        stack.drop_database(url)


def bench_dispatch(
    stack: LocalStack,
    calls: int,
    workers: int = 1,
    rounds: int = 1,
    worker_checkout: Path | None = None,
) -> DispatchBench:
    """Run `rounds` rounds of `calls` calls through `workers` workers on the running `stack`
    (the workers and migrations of `worker_checkout` when given: before and after)."""
    if calls < 2 or workers < 1 or rounds < 1:
        raise CallPanionError("needs at least 2 calls, 1 worker and 1 round")
    with (
        _scratch(stack, worker_checkout) as database_url,
        tempfile.TemporaryDirectory(prefix="callpanion-bench-dispatch-") as tmp,
        emulator_process(Path(tmp)) as providers,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
    ):
        conn.execute("set synchronous_commit = off")
        conn.execute(_SETUP, {"n": calls})
        conn.execute(_VACUUM)
        with running_workers(
            workers, providers, database_url, Path(tmp), worker_checkout
        ) as started:
            claim_ahead_s = started[0].claim_ahead_s()  # the workers' own setting
            probes = Probes(started, child_pid(tmp))
            done = [run_round(conn, providers, calls, claim_ahead_s, probes) for _ in range(rounds)]
            rss = [w.peak_rss_mb() for w in started]
            warnings = sum((w.warnings() for w in started), Counter[str]())
    return DispatchBench(calls, workers, done, rss, warnings, claim_ahead_s)


def report_dispatch(result: DispatchBench) -> str:
    """A readable table, then one JSON line with the figures."""
    lines = [
        f"dispatch: {result.calls:,} calls due at the same second (half APNs VoIP, half FCM),"
        f" {result.workers} worker process(es), claim-ahead {result.claim_ahead_s:g} s;",
        "lateness = emulator received - send_at (first: the earliest push);"
        " pushes/s = delivered / (last delivery - send_at)",
        f"{'round':<7}{'first s':>9}{'p50 s':>9}{'p99 s':>9}{'max s':>9}{'pushes/s':>11}"
        f"{'dupes':>7}{'lost':>6}",
    ]
    for n, r in enumerate(result.rounds, 1):
        lines.append(
            f"{n:<7}{r.percentile(0.0):>9.3f}{r.percentile(0.5):>9.3f}{r.percentile(0.99):>9.3f}{r.percentile(1.0):>9.3f}"
            f"{r.pushes_per_s:>11,.0f}{r.duplicates:>7}{r.lost:>6}"
        )
    figures = result.summary()
    lines.append(
        f"{'median':<7}{'':>9}{figures['p50_s']:>9.3f}{figures['p99_s']:>9.3f}{figures['max_s']:>9.3f}"
        f"{figures['pushes_per_s']:>11,.0f}{figures['duplicates']:>7}{figures['lost']:>6}"
        "  (duplicates and lost: totals)"
    )
    lines.append(
        "per call, ms: worker CPU / sink (emulators) CPU / waiting for claims / for records"
    )
    for n, r in enumerate(result.rounds, 1):
        lines.append(
            f"{n:<7}{r.worker_cpu_ms:>9.3f}{r.sink_cpu_ms:>9.3f}{r.claim_ms:>9.3f}{r.record_ms:>9.3f}"
        )
    rss = ", ".join(f"{mb:.1f}" for mb in result.peak_rss_mb)
    lines.append(f"peak RSS (VmHWM) per worker, MiB: {rss}; the JSON reports the max")
    for message, times in result.warnings.most_common():
        lines.append(f"worker log, {times}x {message}")
    lines.append(json.dumps(figures))
    return "\n".join(lines)
