"""`callpanion chaos`: bursts of calls through real workers while things go wrong.

Every scenario queues a burst of calls (half iOS -> APNs VoIP, half Android -> FCM, each
device its own token) due at one whole second, through real `callpanion worker` processes,
the FCM and APNs emulators in a child process (verifying everything, honouring faults) and a
Postgres cluster of the chaos run's own (a temporary folder, a free port: restarting it
disturbs nothing else), in a scratch database migrated like the real one. Real signals,
a real Postgres stop and start. Then it waits for every row to leave queued/due/claimed and
counts, per call:

- delivered once / duplicates: pushes the emulators accepted for its token (a duplicate is
  harmless to the phone, same CallKit id and expires_at, but it is counted);
- expired: not sent, the row and session `expired` with a `call_expired` alert;
- lost: anything else that reached a final state (sent in the database but never delivered,
  expired without an alert, failed);
- non-final: still queued, due or claimed when the run gave up waiting;
- lateness: first delivery - send_at (p50, p99, max), and the p99 of the calls a killed
  worker held (`victims`: rows whose last_error names it);
- record lag: the database's `sent_at` - the first delivery, for calls delivered once: how
  long a push stays sent but unrecorded, i.e. what a crash at that moment would send again.

Scenarios: baseline; SIGKILL of one worker with its pushes in flight (every push answered
after LATENCY) and while results are being recorded; a Postgres restart, short and long;
a provider storm (503 with Retry-After) that clears and one that never does (every call then
expires, with its alert); twin workers sharing one CALLPANION_WORKER_ID, both running and one
stopped mid-burst (SIGTERM); calls already past their deadline. Scenarios that leave both
workers running hand them to the next one (a worker takes seconds to start); the others start
fresh ones. The first scenario's workers are cold (connections, TLS, OAuth).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from python_worker.bench.dispatch import (
    _SETUP,
    _VACUUM,
    BenchWorker,
    wait_until_healthy,
    worker_env,
)
from python_worker.emulators.process import admin_request, emulator_process
from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack, free_port
from python_worker.stack.settings import default_stack_root, stack_settings

Row = dict[str, object]
Conn = psycopg.Connection[Row]


@dataclass(frozen=True)
class ChaosConfig:
    """The sizes of a run: the full run for the README, the short one for the tests."""

    calls: int = 2000
    workers: int = 2
    restart_short_s: float = 2.0
    restart_long_s: float = 10.0
    storm_s: float = 20.0
    #: The deadline of the never-clearing storm's calls (send_at + this).
    storm_deadline_s: float = 30.0
    #: Provider latency while a worker is killed with its pushes in flight.
    latency_ms: int = 300
    #: How long to wait for every row to become final: past a 30 s lease, so an older
    #: worker's rows come back and are counted (compare with --worker-checkout).
    settle_s: float = 90.0


FULL = ChaosConfig()
SHORT = ChaosConfig(
    calls=60,
    restart_short_s=0.5,
    restart_long_s=3.0,
    storm_s=2.0,
    storm_deadline_s=4.0,
    latency_ms=300,
    settle_s=60.0,
)

#: Calls fall due this long after they are queued, plus a little per call (rounded up to a
#: whole second), so the workers claim them (a second ahead) after the insert committed.
QUEUE_LEAD_S = 1.5
QUEUE_LEAD_PER_CALL_S = 0.0004

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
       %(deadline)s, t.platform, t.provider, t.push_token,
       t.fallback_provider, t.fallback_token,
       private.call_payload('Gran', 'The Chaos', 'Morning call', interval '45 seconds')
from s join private.call_targets t on t.relative_id = s.relative_id
"""
_PENDING = "select count(*) as n from notification_queue where status in ('queued','due','claimed')"
_SENT = "select count(*) as n from notification_queue where status = 'sent'"
_ROWS = """
select q.push_token, q.send_at, q.status, q.sent_at, q.last_error,
       exists (select 1 from alerts a where a.call_session_id = q.call_session_id
               and a.kind = 'call_expired') as expired_alert
from notification_queue q
"""
_CLEAR = "delete from call_sessions"  # cascades to the queue rows
_CLEAR_ALERTS = "delete from alerts"


@dataclass
class Outcome:
    """What became of one scenario's burst."""

    scenario: str
    calls: int
    once: int = 0
    duplicates: int = 0
    lost: int = 0
    non_final: int = 0
    expired: int = 0
    lateness_s: list[float] = field(default_factory=list)  # delivered calls, sorted
    victim_lateness_s: list[float] = field(default_factory=list)  # a killed worker's calls
    record_lag_s: list[float] = field(default_factory=list)  # delivered once, sorted
    note: str | None = None  # why the scenario did not run

    def summary(self) -> dict[str, object]:
        """The figures as JSON-ready values (seconds, rounded; None when there is none)."""
        return {
            "scenario": self.scenario,
            "calls": self.calls,
            "delivered_once": self.once,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "non_final": self.non_final,
            "expired": self.expired,
            "late_p50_s": _rounded(percentile(self.lateness_s, 0.5)),
            "late_p99_s": _rounded(percentile(self.lateness_s, 0.99)),
            "late_max_s": _rounded(percentile(self.lateness_s, 1.0)),
            "victims": len(self.victim_lateness_s),
            "victims_p99_s": _rounded(percentile(self.victim_lateness_s, 0.99)),
            "record_lag_p99_s": _rounded(percentile(self.record_lag_s, 0.99)),
            "record_lag_max_s": _rounded(percentile(self.record_lag_s, 1.0)),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not values:
        return None
    return values[max(1, math.ceil(q * len(values))) - 1]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- the world of one run ----------------------------------------------------------------------


@dataclass
class World:
    """The cluster, the scratch database, the emulators and where the workers log."""

    stack: LocalStack
    database_url: str
    conn: Conn
    providers: dict[str, str]
    folder: Path
    config: ChaosConfig
    worker_pythonpath: str | None = None
    workers: list[BenchWorker] = field(default_factory=list)

    # -- emulators ---------------------------------------------------------------------
    def _bases(self) -> list[str]:
        return [f"https://localhost:{self.providers['APNS_PORT']}", self.providers["FCM_BASE_URL"]]

    def admin(self, method: str, path: str, body: dict[str, object] | None = None) -> None:
        for base in self._bases():
            admin_request(base, self.providers["APNS_CA_FILE"], method, path, 120, body)

    def fault(self, apns: dict[str, object], fcm: dict[str, object]) -> None:
        ca = self.providers["APNS_CA_FILE"]
        apns_base, fcm_base = self._bases()
        admin_request(apns_base, ca, "POST", "/_emulator/faults", body={"token": "*", **apns})
        admin_request(fcm_base, ca, "POST", "/_emulator/faults", body={"token": "*", **fcm})

    def deliveries(self) -> dict[str, list[float]]:
        """received_at of every push accepted, by token (sorted)."""
        out: dict[str, list[float]] = {}
        for base in self._bases():
            seen = admin_request(
                base, self.providers["APNS_CA_FILE"], "GET", "/_emulator/deliveries"
            )
            listed = seen["deliveries"]
            assert isinstance(listed, list)
            for item in listed:
                out.setdefault(str(item["token"]), []).append(float(item["received_at"]))
        return {token: sorted(times) for token, times in out.items()}

    # -- workers -----------------------------------------------------------------------
    def start_workers(self, ids: Sequence[str], *, fresh: bool = False) -> list[BenchWorker]:
        """Workers with these ids: the running ones when they match and are all alive
        (scenarios that leave them running hand them on; a worker costs seconds to start),
        else (or when `fresh`: their metrics start from zero) new ones."""
        running = [w.worker_id for w in self.workers if w.process.poll() is None]
        if not fresh and running == list(ids) and len(self.workers) == len(ids):
            return list(self.workers)
        self.stop_workers()
        started: list[BenchWorker] = []
        for worker_id in ids:
            port = free_port()
            log_file = self.folder / f"{worker_id}-{port}.log"
            env = worker_env(os.environ, self.providers, self.database_url, worker_id, port)
            if self.worker_pythonpath:
                env["PYTHONPATH"] = self.worker_pythonpath
            with log_file.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, "-m", "python_worker", "worker"],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                )
            worker = BenchWorker(worker_id, port, log_file, process)
            started.append(worker)
            self.workers.append(worker)
        wait_until_healthy(started)
        return started

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    # -- the database ------------------------------------------------------------------
    def reconnect(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.conn = _connect(self.database_url)

    def queue(self, *, deadline_s: float = 120.0, ago_s: float | None = None) -> dt.datetime:
        """Queue one call per device, all due at one whole second (or `ago_s` in the past);
        returns that second."""
        calls = self.config.calls
        if ago_s is None:
            lead = QUEUE_LEAD_S + calls * QUEUE_LEAD_PER_CALL_S
            send_at = dt.datetime.fromtimestamp(math.ceil(time.time() + lead), dt.UTC)
        else:
            send_at = dt.datetime.fromtimestamp(time.time() - ago_s, dt.UTC)
        deadline = send_at + dt.timedelta(seconds=deadline_s)
        with self.conn.transaction():
            queued = self.conn.execute(_QUEUE, {"send_at": send_at, "deadline": deadline}).rowcount
        if queued != calls:
            raise CallPanionError(f"queued {queued} calls, expected {calls}")
        return send_at

    def count(self, query: str) -> int:
        row = self.conn.execute(query).fetchone()
        assert row is not None
        return int(str(row["n"]))

    def settle(self) -> None:
        deadline = time.monotonic() + self.config.settle_s
        while time.monotonic() < deadline:
            try:
                if self.count(_PENDING) == 0:
                    return
            except psycopg.OperationalError:
                time.sleep(0.2)
                self.reconnect()
                continue
            time.sleep(0.1)


def _connect(url: str) -> Conn:
    conn: Conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    conn.execute("set synchronous_commit = off")
    return conn


class TriggerNeverCame(CallPanionError):
    """The moment a fault was to be injected never came (say, an older worker that records a
    whole batch at once is never 'recording with rows still in flight')."""


def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition of the run (the trigger of a fault) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TriggerNeverCame("not run: its trigger never came")
        time.sleep(0.005)


def wait_until(moment: dt.datetime) -> None:
    time.sleep(max(0.0, moment.timestamp() - time.time()))


# -- the scenarios -----------------------------------------------------------------------------

#: A scenario: (world) -> the worker id whose rows are its victims, or None.
Scenario = Callable[[World], "str | None"]


def baseline(world: World) -> str | None:
    world.start_workers(["chaos-a", "chaos-b"])
    world.queue()
    return None


def kill_in_flight(world: World) -> str | None:
    """SIGKILL a worker while the pushes it sent wait for their answers (at least half of
    what it holds has gone out)."""
    world.fault({"latency_ms": world.config.latency_ms}, {"latency_ms": world.config.latency_ms})
    started = world.start_workers(["chaos-a", "chaos-b"], fresh=True)
    world.queue()

    def half_sent(worker: BenchWorker) -> bool:
        sent = _metric(worker, "callpanion_push_lateness_seconds_count")
        return sent >= 1 and sent >= _metric(worker, "callpanion_in_flight") / 2

    # A moment for the requests to reach the providers (well within their latency), so they
    # are there, unanswered, when the worker dies.
    return _kill_first(started, half_sent, settle_s=world.config.latency_ms / 3000)


def kill_recording(world: World) -> str | None:
    """SIGKILL a worker once its results are being recorded and it still holds rows."""
    started = world.start_workers(["chaos-a", "chaos-b"], fresh=True)
    world.queue()

    def recording(worker: BenchWorker) -> bool:
        return (
            _metric(worker, "callpanion_push_results_total") >= 1
            and _metric(worker, "callpanion_in_flight") >= 1
        )

    return _kill_first(started, recording)


def _kill_first(
    workers: Sequence[BenchWorker], ready: Callable[[BenchWorker], bool], settle_s: float = 0.0
) -> str:
    """SIGKILL the first worker for which `ready` holds (`settle_s` later); its id (the
    victims' marker)."""
    victims: list[BenchWorker] = []

    def found() -> bool:
        victims.extend(w for w in workers if not victims and ready(w))
        return bool(victims)

    until(found)
    time.sleep(settle_s)
    victims[0].process.kill()
    victims[0].process.wait()
    return victims[0].worker_id


def _metric(worker: BenchWorker, name: str) -> float:
    """The sum of a metric's samples in a worker's /metrics (0 when absent)."""
    url = f"http://127.0.0.1:{worker.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def _restart(world: World, down_s: float) -> None:
    world.start_workers(["chaos-a", "chaos-b"])
    send_at = world.queue()
    wait_until(send_at + dt.timedelta(seconds=0.05))
    world.stack.down()
    time.sleep(down_s)  # the outage itself: what this scenario is about
    world.stack.up(apply=False)
    world.reconnect()


def pg_restart_short(world: World) -> str | None:
    _restart(world, world.config.restart_short_s)
    return None


def pg_restart_long(world: World) -> str | None:
    _restart(world, world.config.restart_long_s)
    return None


_STORM_APNS: dict[str, object] = {
    "status": 503,
    "reason": "ServiceUnavailable",
    "retry_after": "1",
}
_STORM_FCM: dict[str, object] = {"status": 503, "reason": "UNAVAILABLE", "retry_after": "1"}


def storm_clearing(world: World) -> str | None:
    world.fault(_STORM_APNS, _STORM_FCM)
    world.start_workers(["chaos-a", "chaos-b"])
    send_at = world.queue()
    wait_until(send_at + dt.timedelta(seconds=world.config.storm_s))
    world.admin("DELETE", "/_emulator/faults")
    return None


def storm_forever(world: World) -> str | None:
    world.fault(_STORM_APNS, _STORM_FCM)
    world.start_workers(["chaos-a", "chaos-b"])
    world.queue(deadline_s=world.config.storm_deadline_s)
    return None


def twins(world: World) -> str | None:
    world.start_workers(["chaos-twin", "chaos-twin"])
    world.queue()
    return None


def twins_one_stopped(world: World) -> str | None:
    world.fault({"latency_ms": world.config.latency_ms}, {"latency_ms": world.config.latency_ms})
    leaving, _ = world.start_workers(["chaos-twin", "chaos-twin"])
    send_at = world.queue()
    wait_until(send_at + dt.timedelta(seconds=0.1))
    leaving.terminate()  # SIGTERM: a graceful stop gives back only its own rows
    leaving.process.wait(30)
    return None


def past_deadline(world: World) -> str | None:
    world.start_workers(["chaos-a", "chaos-b"])
    world.queue(ago_s=180.0, deadline_s=120.0)  # due three minutes ago, deadline a minute ago
    return None


#: In running order: those that leave both workers running first, so they share them.
SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline,
    "storm-clearing": storm_clearing,
    "storm-forever": storm_forever,
    "past-deadline": past_deadline,
    "pg-restart-short": pg_restart_short,
    "pg-restart-long": pg_restart_long,
    "kill-in-flight": kill_in_flight,
    "kill-recording": kill_recording,
    "twins": twins,
    "twins-one-stopped": twins_one_stopped,
}


# -- one scenario, measured --------------------------------------------------------------------


def run_scenario(world: World, name: str) -> Outcome:
    """Run one scenario from a clean queue and fresh workers; count what became of it."""
    world.conn.execute(_CLEAR)
    world.conn.execute(_CLEAR_ALERTS)
    world.conn.execute(_VACUUM)
    world.admin("POST", "/_emulator/reset")
    try:
        victim = SCENARIOS[name](world)
        world.settle()
    except BaseException:
        world.stop_workers()
        raise
    finally:
        world.admin("DELETE", "/_emulator/faults")
    return measure(world, name, victim)


def measure(world: World, name: str, victim: str | None) -> Outcome:
    rows = world.conn.execute(_ROWS).fetchall()
    delivered = world.deliveries()
    out = Outcome(name, len(rows))
    for row in rows:
        token = str(row["push_token"])
        times = delivered.get(token, [])
        send_at = row["send_at"]
        assert isinstance(send_at, dt.datetime)
        status = row["status"]
        if status in ("queued", "due", "claimed"):
            out.non_final += 1
        elif times:
            late = times[0] - send_at.timestamp()
            out.lateness_s.append(late)
            if len(times) == 1:
                out.once += 1
                if isinstance(row["sent_at"], dt.datetime):
                    out.record_lag_s.append(row["sent_at"].timestamp() - times[0])
            else:
                out.duplicates += 1
            if victim is not None and victim in str(row["last_error"] or ""):
                out.victim_lateness_s.append(late)
        elif status == "expired" and row["expired_alert"]:
            out.expired += 1
        else:
            out.lost += 1
    for values in (out.lateness_s, out.victim_lateness_s, out.record_lag_s):
        values.sort()
    return out


# -- the whole run -----------------------------------------------------------------------------


@contextlib.contextmanager
def chaos_world(
    config: ChaosConfig, folder: Path, worker_checkout: Path | None = None
) -> Iterator[World]:
    """A private cluster (deleted afterwards), a scratch database with the bench devices,
    and the emulators. `worker_checkout` runs the workers (and migrations) of another
    checkout of this repository, to compare before and after a change."""
    base = stack_settings()
    project_dir = worker_checkout.resolve() if worker_checkout else base.project_dir
    settings = base.model_copy(
        update={
            "project_dir": project_dir,
            "stack_dir": default_stack_root(base.project_dir) / f"chaos-{os.getpid()}",
            "port": free_port(),
        }
    )
    stack = LocalStack(settings)
    try:
        stack.up(apply=False)  # the scratch database below is migrated on its own
        with (
            stack.scratch_database("chaos") as database_url,
            emulator_process(folder, fast=False) as providers,
        ):
            conn = _connect(database_url)
            try:
                conn.execute(_SETUP, {"n": config.calls})
                conn.execute(_VACUUM)
                world = World(
                    stack,
                    database_url,
                    conn,
                    providers,
                    folder,
                    config,
                    str(worker_checkout.resolve()) if worker_checkout else None,
                )
                try:
                    yield world
                finally:
                    world.stop_workers()
                    world.conn.close()
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
    finally:
        stack.down()
        shutil.rmtree(settings.stack_dir, ignore_errors=True)


def run_chaos(
    config: ChaosConfig,
    scenarios: Sequence[str] | None = None,
    worker_checkout: Path | None = None,
) -> list[Outcome]:
    """Run the scenarios (all by default) in a world of their own; their outcomes."""
    names = list(scenarios or SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise CallPanionError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    with (
        tempfile.TemporaryDirectory(prefix="callpanion-chaos-") as tmp,
        chaos_world(config, Path(tmp), worker_checkout) as world,
    ):
        outcomes = []
        for name in names:
            try:
                outcomes.append(run_scenario(world, name))
            except TriggerNeverCame as error:  # say so, and run the others
                outcomes.append(Outcome(name, config.calls, note=str(error)))
        return outcomes


def report_chaos(outcomes: Sequence[Outcome], config: ChaosConfig) -> str:
    """The table, then one JSON line per scenario."""

    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    head = (
        f"{'scenario':<19}{'calls':>6}{'once':>6}{'dupes':>6}{'lost':>5}{'non-final':>10}"
        f"{'expired':>8}{'late p50':>9}{'p99':>7}{'max':>8}{'victims':>8}{'v. p99':>8}"
        f"{'rec. lag p99':>13}"
    )
    lines = [
        f"chaos: {config.calls:,} calls due at one second (half APNs VoIP, half FCM), "
        f"{config.workers} workers, real signals; seconds",
        head,
    ]
    for out in outcomes:
        if out.note:
            lines.append(f"{out.scenario:<19}{out.note}")
            continue
        f = out.summary()
        lines.append(
            f"{out.scenario:<19}{out.calls:>6}{out.once:>6}{out.duplicates:>6}{out.lost:>5}"
            f"{out.non_final:>10}{out.expired:>8}{cell(f['late_p50_s']):>9}"
            f"{cell(f['late_p99_s']):>7}{cell(f['late_max_s']):>8}{cell(f['victims']):>8}"
            f"{cell(f['victims_p99_s']):>8}{cell(f['record_lag_p99_s']):>13}"
        )
    lines.extend(json.dumps(out.summary()) for out in outcomes if not out.note)
    return "\n".join(lines)
