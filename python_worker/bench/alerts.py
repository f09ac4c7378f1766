"""`callpanion bench alerts` and the chaos run's `alerts-kill`: the family told, measured.

N households, each with one admin who has a verified email, SMS number and browser (Web
Push), on a scratch database of the local stack, with the emulators (`callpanion emulators
--fast`: the push service still checks VAPID and decrypts every body) in a child process and
real `callpanion worker` processes. N alerts are raised in one statement (the same minute:
the same instant), and each alert's delay is measured from its `created_at` to the first of
its three messages the emulators accepted (their clock and the database's are this
machine's). The goal (issue 21): p99 within 5 s, two orders of magnitude under the 10
minutes families are used to.

`alerts-kill` raises the same burst through two workers and SIGKILLs one of them once a fifth
of the messages are out; then it counts, per address, duplicates (more than one message) and
losses (none, or an outbox row that did not end `sent`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from python_worker.bench.dispatch import BenchWorker, wait_until_healthy, worker_env
from python_worker.emulators.process import admin_request, emulator_process
from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack, free_port

Conn = psycopg.Connection[dict[str, object]]
#: Waiting for every outbox row of the burst to be final.
SETTLE_TIMEOUT_S = 180.0

_PENDING = """
select count(*) as n from private.outbox o
where o.kind = 'alert' and o.status in ('queued', 'claimed')
"""
_ROWS = "select status, count(*) as n from private.outbox where kind = 'alert' group by status"
_RAISE = """
insert into public.alerts (household_id, relative_id, kind, severity, message)
select r.household_id, r.id, 'missed_calls', 'critical', 'Gran did not answer 2 calls'
from public.relatives r
returning id, household_id, extract(epoch from created_at)::float8 as raised_at
"""


@dataclass
class Household:
    id: uuid.UUID
    email: str
    phone: str
    subscription: str  # the push service's subscription id (its inbox key)


@dataclass
class Burst:
    """What became of one burst of alerts."""

    alerts: int
    first_s: list[float]  # per alert: raise -> first message accepted, sorted
    by_channel: dict[str, list[float]]
    duplicates: int
    lost: int
    statuses: dict[str, int]
    killed: str | None = None

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        data = self.first_s if values is None else values
        if not data:
            return float("nan")
        return data[min(len(data) - 1, round(q * (len(data) - 1)))]

    def summary(self) -> dict[str, object]:
        return {
            "alerts": self.alerts,
            "p50_s": round(self.percentile(0.5), 3),
            "p99_s": round(self.percentile(0.99), 3),
            "max_s": round(self.percentile(1.0), 3),
            **{
                f"{channel}_p99_s": round(self.percentile(0.99, values), 3)
                for channel, values in sorted(self.by_channel.items())
            },
            "duplicates": self.duplicates,
            "lost": self.lost,
            "outbox": self.statuses,
            "killed": self.killed,
        }


def _households(conn: Conn, providers: Mapping[str, str], n: int) -> list[Household]:
    made = admin_request(
        providers["CALLPANION_EMULATED_WEBPUSH_URL"],
        providers["WEBPUSH_CA_FILE"],
        "POST",
        "/_emulator/subscriptions",
        body={"count": n},
        timeout=300,
    )
    subscriptions = made["subscriptions"]
    assert isinstance(subscriptions, list)
    out: list[Household] = []
    with conn.transaction():
        for i, sub in enumerate(subscriptions):
            hid, uid = uuid.uuid4(), uuid.uuid4()
            email, phone = f"gran{i}-family@example.com", f"+4477{i:09d}"
            conn.execute("insert into auth.users (id, email) values (%s, %s)", [uid, email])
            conn.execute("insert into households (id, name) values (%s, %s)", [hid, f"Bench {i}"])
            conn.execute(
                "insert into household_members (household_id, user_id, role)"
                " values (%s, %s, 'admin')",
                [hid, uid],
            )
            conn.execute(
                "insert into relatives (household_id, display_name, timezone)"
                " values (%s, %s, 'Europe/London')",
                [hid, f"Gran {i}"],
            )
            keys = sub["keys"]
            conn.execute(
                """insert into public.contact_methods
                     (household_id, user_id, channel, address, push_p256dh, push_auth, verified_at)
                   values (%(h)s, %(u)s, 'email', %(email)s, null, null, now()),
                          (%(h)s, %(u)s, 'sms', %(phone)s, null, null, now()),
                          (%(h)s, %(u)s, 'webpush', %(endpoint)s, %(p256dh)s, %(auth)s, now())""",
                {
                    "h": hid,
                    "u": uid,
                    "email": email,
                    "phone": phone,
                    "endpoint": sub["endpoint"],
                    "p256dh": keys["p256dh"],
                    "auth": keys["auth"],
                },
            )
            out.append(Household(hid, email, phone, sub["endpoint"].rsplit("/", 1)[1]))
    conn.execute("vacuum (analyze) public.contact_methods, public.relatives")
    return out


def _deliveries(providers: Mapping[str, str]) -> dict[str, list[float]]:
    """Every message the three emulators accepted: token -> when, in order."""
    ca = providers["WEBPUSH_CA_FILE"]
    out: dict[str, list[float]] = {}
    for base in (
        providers["CALLPANION_EMULATED_WEBPUSH_URL"],
        providers["TWILIO_BASE_URL"],
        providers["CALLPANION_EMULATED_SMTP_ADMIN_URL"],
    ):
        seen = admin_request(base, ca, "GET", "/_emulator/deliveries", timeout=120)
        deliveries = seen["deliveries"]
        assert isinstance(deliveries, list)
        for d in deliveries:
            out.setdefault(str(d["token"]), []).append(float(d["received_at"]))
    return out


def _accepted(providers: Mapping[str, str]) -> int:
    seen = admin_request(
        providers["CALLPANION_EMULATED_WEBPUSH_URL"],
        providers["WEBPUSH_CA_FILE"],
        "GET",
        "/_emulator/deliveries",
    )
    accepted = seen["accepted"]
    assert isinstance(accepted, int)
    return accepted


@contextlib.contextmanager
def _workers(
    count: int, providers: Mapping[str, str], database_url: str, folder: Path
) -> Iterator[list[BenchWorker]]:
    started: list[BenchWorker] = []
    try:
        for n in range(1, count + 1):
            worker_id, port = f"bench-alerts-{n}", free_port()
            log_file = folder / f"{worker_id}.log"
            env = worker_env(os.environ, providers, database_url, worker_id, port)
            with log_file.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, "-m", "python_worker", "worker"],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=folder,
                )
            started.append(BenchWorker(worker_id, port, log_file, process))
        wait_until_healthy(started)
        yield started
    finally:
        for worker in started:
            worker.terminate()
        for worker in started:
            worker.stop()


def _settle(conn: Conn) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        row = conn.execute(_PENDING).fetchone()
        if row is not None and row["n"] == 0:
            return
        time.sleep(0.1)


def _burst(
    conn: Conn,
    providers: Mapping[str, str],
    houses: list[Household],
    workers: list[BenchWorker],
    *,
    kill_after: int | None = None,
) -> Burst:
    raised = {r["household_id"]: float(r["raised_at"]) for r in conn.execute(_RAISE).fetchall()}  # type: ignore[arg-type]
    killed = None
    if kill_after is not None:
        deadline = time.monotonic() + 60
        while _accepted(providers) < kill_after and time.monotonic() < deadline:
            time.sleep(0.005)
        workers[0].process.send_signal(signal.SIGKILL)
        killed = workers[0].worker_id
    _settle(conn)
    seen = _deliveries(providers)
    first: list[float] = []
    channels: dict[str, list[float]] = {"email": [], "sms": [], "webpush": []}
    duplicates = lost = 0
    for house in houses:
        at = raised[house.id]
        times = []
        for channel, token in (
            ("email", house.email),
            ("sms", house.phone),
            ("webpush", house.subscription),
        ):
            got = seen.get(token, [])
            duplicates += len(got) > 1
            lost += not got
            if got:
                channels[channel].append(min(got) - at)
                times.append(min(got) - at)
        if times:
            first.append(min(times))
    statuses = {str(r["status"]): int(r["n"]) for r in conn.execute(_ROWS).fetchall()}  # type: ignore[call-overload]
    lost = max(lost, sum(n for s, n in statuses.items() if s != "sent"))
    return Burst(
        alerts=len(houses),
        first_s=sorted(first),
        by_channel={k: sorted(v) for k, v in channels.items()},
        duplicates=duplicates,
        lost=lost,
        statuses=statuses,
        killed=killed,
    )


def run_alerts(stack: LocalStack, alerts: int, workers: int = 1, *, kill: bool = False) -> Burst:
    """One burst of `alerts` alerts through `workers` workers (two, one SIGKILLed, with kill)."""
    if alerts < 1 or workers < 1:
        raise CallPanionError("needs at least 1 alert and 1 worker")
    if kill:
        workers = max(workers, 2)
    with (
        stack.scratch_database("bench_alerts") as database_url,
        tempfile.TemporaryDirectory(prefix="callpanion-bench-alerts-") as tmp,
        emulator_process(Path(tmp)) as providers,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
    ):
        houses = _households(conn, providers, alerts)
        with _workers(workers, providers, database_url, Path(tmp)) as started:
            return _burst(
                conn,
                providers,
                houses,
                started,
                kill_after=max(alerts // 5, 1) if kill else None,
            )


def report_alerts(burst: Burst) -> str:
    """A readable summary, then one JSON line with the figures."""
    figures = burst.summary()
    lines = [
        f"alerts: {burst.alerts:,} alerts raised at once, each to one admin by email, SMS and"
        " Web Push; delay = raised -> the first message accepted by the emulators",
        f"  first contact: p50 {figures['p50_s']} s, p99 {figures['p99_s']} s,"
        f" max {figures['max_s']} s (goal: p99 <= 5 s)",
        "  by channel p99: "
        + ", ".join(f"{c} {figures[f'{c}_p99_s']} s" for c in sorted(burst.by_channel)),
        f"  duplicates {burst.duplicates}, lost {burst.lost}; outbox: {burst.statuses}"
        + (f"; SIGKILLed {burst.killed} mid-burst" if burst.killed else ""),
        json.dumps(figures),
    ]
    return "\n".join(lines)


# -- the command line (kept here so the CLI only wires it in) ---------------------------------

#: The chaos run's scenario name for the alerts' SIGKILL.
CHAOS_SCENARIO = "alerts-kill"


def bench_command(stack: LocalStack, alerts: int, workers: int) -> int:
    """Run the bench and print its figures."""
    print(report_alerts(run_alerts(stack, alerts, workers)))
    return 0


def chaos_command(stack: LocalStack, alerts: int) -> int:
    """The chaos run's `alerts-kill`: duplicates and losses across a worker SIGKILL."""
    print(report_alerts(run_alerts(stack, alerts, 2, kill=True)))
    return 0
