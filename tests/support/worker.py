"""Fixtures of the worker tests: a database of its own, families to call, and real workers.

Workers run as real `callpanion worker` processes (so SIGTERM and SIGKILL are real signals),
pointed at the emulators of tests/support/push.py and at a dedicated database of the session
cluster, migrated like the real one (pg_cron does not run there: nothing but the worker moves
the queue). Waiting is on observable conditions (rows, deliveries, /healthz), never on sleeps.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.emulators.faults import ANY, Fault
from python_worker.emulators.suite import ThreadedSuite
from python_worker.stack.cluster import LocalStack
from tests.support.db import free_port
from tests.support.world import apns_token, fcm_token

Row = dict[str, Any]
Conn = psycopg.Connection[Row]
T = TypeVar("T")


@pytest.fixture(scope="session")
def worker_database(pg_stack: LocalStack) -> Iterator[str]:
    with pg_stack.scratch_database("worker") as url:
        yield url


@pytest.fixture
def wdb(worker_database: str) -> Iterator[Conn]:
    """An autocommit connection as `postgres` (the owner) to the worker database, emptied after the test."""
    with psycopg.connect(worker_database, autocommit=True, row_factory=dict_row) as conn:
        yield conn
        conn.execute("truncate households, auth.users cascade")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 20.0, every: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# -- data ---------------------------------------------------------------------------------


@dataclass
class Relative:
    household: uuid.UUID
    relative: uuid.UUID
    device: uuid.UUID
    platform: str
    voip_token: str | None
    fcm_token: str | None


def add_relative(
    conn: Conn, platform: str = "ios", *, voip: bool = True, fcm: bool = True
) -> Relative:
    """A household with one relative and an active paired device (committed)."""
    household = conn.execute(
        "insert into households (name) values ('The Workers') returning id"
    ).fetchone()
    assert household is not None
    relative = conn.execute(
        "insert into relatives (household_id, display_name, timezone) values (%s, 'Gran', 'UTC') returning id",
        [household["id"]],
    ).fetchone()
    assert relative is not None
    voip_token = apns_token() if voip and platform == "ios" else None
    fcm_tok = fcm_token() if fcm else None
    device = conn.execute(
        """insert into device_pairs (household_id, relative_id, status, platform, voip_token,
               fcm_token, secret_hash, paired_at)
           values (%s, %s, 'active', %s, %s, %s, 'h', now()) returning id""",
        [household["id"], relative["id"], platform, voip_token, fcm_tok],
    ).fetchone()
    assert device is not None
    return Relative(household["id"], relative["id"], device["id"], platform, voip_token, fcm_tok)


def queue_call(
    conn: Conn,
    who: Relative,
    *,
    in_s: float = 0.0,
    deadline_s: float = 120.0,
    silent: bool = False,
) -> uuid.UUID:
    """A call session and its queue row for `who`, due `in_s` seconds from now (the database's
    clock), as phase 1 would queue it. `silent` skips the insert trigger's NOTIFY (a lost hint).
    Returns the queue row id."""
    with conn.transaction():
        if silent:
            # The queue's insert trigger (its NOTIFY) is off for this insert only: `postgres`
            # owns the table but, not being a superuser (as on hosted Supabase), may not set
            # session_replication_role. The change is undone before this transaction commits,
            # so no other session ever sees the trigger disabled.
            conn.execute("alter table public.notification_queue disable trigger user")
        row = conn.execute(
            """
            with s as (
              insert into call_sessions (household_id, relative_id, device_id, occurrence_at,
                                         origin, status)
              values (%(h)s, %(r)s, %(d)s, now() + make_interval(secs => %(in)s), 'call_now', 'queued')
              returning id, occurrence_at)
            insert into notification_queue (call_session_id, household_id, device_id,
              occurrence_at, status, send_at, deadline_at, platform, provider, push_token,
              fallback_provider, fallback_token, payload)
            select s.id, %(h)s, t.device_id, s.occurrence_at, 'queued', s.occurrence_at,
                   s.occurrence_at + make_interval(secs => %(deadline)s), t.platform, t.provider,
                   t.push_token, t.fallback_provider, t.fallback_token,
                   private.call_payload('Gran', 'The Workers', 'Morning call', interval '45 seconds')
            from s join private.call_targets t on t.relative_id = %(r)s
            returning id
            """,
            {
                "h": who.household,
                "r": who.relative,
                "d": who.device,
                "in": in_s,
                "deadline": deadline_s,
            },
        ).fetchone()
        if silent:
            conn.execute("alter table public.notification_queue enable trigger user")
    assert row is not None, "the relative has no call target"
    return row["id"]  # type: ignore[no-any-return]


def queue_many(conn: Conn, n: int, *, in_s: float, deadline_s: float = 120.0) -> list[uuid.UUID]:
    """`n` relatives (alternately iOS and Android, each with its own tokens) with one call
    each, all due at the same instant `in_s` seconds from now. Returns the queue row ids."""
    with conn.transaction():
        conn.execute(
            """
            with h as (
              insert into households (name) select 'Bulk ' || g from generate_series(1, %(n)s) g
              returning id),
            r as (
              insert into relatives (household_id, display_name, timezone)
              select id, 'Gran', 'UTC' from h returning id, household_id)
            insert into device_pairs (household_id, relative_id, status, platform, voip_token,
                                      fcm_token, secret_hash, paired_at)
            select household_id, id, 'active', p.platform,
                   case when p.platform = 'ios' then md5(random()::text) || md5(random()::text) end,
                   'fcm-' || md5(random()::text) || md5(random()::text), 'h', now()
            from (select r.*, row_number() over () as i from r) r
            cross join lateral (select case when r.i %% 2 = 0 then 'ios' else 'android' end
                                  as platform) p
            """,
            {"n": n},
        )
        rows = conn.execute(
            """
            with t as (
              select t.*, d.household_id, gen_random_uuid() as session_id,
                     now() + make_interval(secs => %(in)s) as at
              from private.call_targets t join device_pairs d on d.id = t.device_id
              where not exists (select 1 from call_sessions c where c.relative_id = t.relative_id)),
            s as (
              insert into call_sessions (id, household_id, relative_id, device_id, occurrence_at,
                                         origin, status)
              select session_id, household_id, relative_id, device_id, at, 'call_now', 'queued'
              from t)
            insert into notification_queue (call_session_id, household_id, device_id,
              occurrence_at, status, send_at, deadline_at, platform, provider, push_token,
              fallback_provider, fallback_token, payload)
            select session_id, household_id, device_id, at, 'queued', at,
                   at + make_interval(secs => %(deadline)s), platform, provider, push_token,
                   fallback_provider, fallback_token,
                   private.call_payload('Gran', 'The Workers', 'Morning call', interval '45 seconds')
            from t
            returning id
            """,
            {"in": in_s, "deadline": deadline_s},
        ).fetchall()
    return [row["id"] for row in rows]


def count_by_status(conn: Conn, ids: list[uuid.UUID]) -> dict[str, int]:
    rows = conn.execute(
        "select status, count(*) as n from notification_queue where id = any(%s) group by status",
        [ids],
    ).fetchall()
    return {row["status"]: row["n"] for row in rows}


def all_sent(conn: Conn, ids: list[uuid.UUID]) -> bool:
    return count_by_status(conn, ids) == {"sent": len(ids)}


def metric(worker: WorkerProcess, name: str, labels: str = "") -> float:
    """One sample of the worker's /metrics, e.g. metric(w, "callpanion_pushes_total",
    '{outcome="delivered",provider="apns"}'); 0 when absent."""
    text = worker.get("/metrics")[1].decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def queue_rows(conn: Conn, ids: list[uuid.UUID]) -> list[Row]:
    return conn.execute(
        "select * from notification_queue where id = any(%s) order by send_at", [ids]
    ).fetchall()


def queue_row(conn: Conn, queue_id: uuid.UUID) -> Row:
    row = conn.execute("select * from notification_queue where id = %s", [queue_id]).fetchone()
    assert row is not None
    return row


def session_for(conn: Conn, queue_id: uuid.UUID) -> Row:
    row = conn.execute(
        "select c.* from call_sessions c join notification_queue q on q.call_session_id = c.id where q.id = %s",
        [queue_id],
    ).fetchone()
    assert row is not None
    return row


def status_is(conn: Conn, queue_id: uuid.UUID, *statuses: str) -> Row | None:
    row = queue_row(conn, queue_id)
    return row if row["status"] in statuses else None


def delivered_tokens(emulators: ThreadedSuite) -> collections.Counter[str]:
    """How many pushes each token got, on both providers."""
    suite = emulators.suite
    return collections.Counter(
        [d.token for d in suite.apns.deliveries] + [d.token for d in suite.fcm.deliveries]
    )


def tokens_of(conn: Conn, ids: list[uuid.UUID]) -> list[str]:
    """The push tokens of these queue rows."""
    rows = conn.execute(
        "select push_token from notification_queue where id = any(%s)", [ids]
    ).fetchall()
    return [row["push_token"] for row in rows]


def slow_providers(emulators: ThreadedSuite, latency_s: float) -> None:
    """Both providers answer every push `latency_s` late (until the faults are cleared)."""
    emulators.suite.apns.faults.add(ANY, Fault(latency_s=latency_s))
    emulators.suite.fcm.faults.add(ANY, Fault(latency_s=latency_s))


def kill(worker: WorkerProcess) -> None:
    """SIGKILL a worker (nothing of it runs after: no give-back, no goodbye) and reap it."""
    worker.signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL


# -- workers ------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A running `callpanion worker` and where its logs go."""

    process: subprocess.Popen[bytes]
    log_file: Path
    http_port: int
    worker_id: str
    stopped: bool = field(default=False)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout
            ) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def healthy(self) -> bool:
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self.stopped = True
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.stopped = True


class Workers:
    """Starts workers for one test and stops every one of them afterwards."""

    def __init__(self, database_url: str, emulators: ThreadedSuite, tmp_path: Path) -> None:
        self.database_url = database_url
        self.emulators = emulators
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def env(self, worker_id: str, port: int, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CALLPANION_", "FCM_", "APNS_", "SUPABASE_"))
        }
        env.update(self.emulators.suite.env())
        env.update(
            {
                "CALLPANION_WORKER_DATABASE_URL": self.database_url,
                "CALLPANION_WORKER_ID": worker_id,
                "CALLPANION_WORKER_HTTP_PORT": str(port),
                "CALLPANION_LOG_LEVEL": "INFO",
                "CALLPANION_POLL_INTERVAL_SECS": "5",
                "CALLPANION_LEASE_SECS": "5",
                "CALLPANION_SHUTDOWN_GRACE_SECS": "5",
            }
        )
        env.update(overrides)
        return env

    def start(self, *, wait_healthy: bool = True, **overrides: str) -> WorkerProcess:
        worker_id = f"test-worker-{len(self.started) + 1}-{uuid.uuid4().hex[:6]}"
        port = free_port()
        log_file = self.tmp_path / f"{worker_id}.log"
        with log_file.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "python_worker", "worker"],
                env=self.env(worker_id, port, **overrides),
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_path,  # no stray .env is picked up
            )
        worker = WorkerProcess(process, log_file, port, worker_id)
        self.started.append(worker)
        if wait_healthy:
            wait_for(
                f"{worker_id} to be healthy",
                lambda: worker.healthy() or self._died(worker),
                timeout=30,
            )
        return worker

    @staticmethod
    def _died(worker: WorkerProcess) -> bool:
        if worker.process.poll() is not None:
            raise AssertionError(
                f"{worker.worker_id} exited with {worker.process.returncode}:\n"
                + worker.log_file.read_text()[-3000:]
            )
        return False

    def stop_all(self) -> None:
        for worker in self.started:
            with contextlib.suppress(Exception):
                worker.stop()


@pytest.fixture
def workers(
    worker_database: str, wdb: Conn, emulators: ThreadedSuite, tmp_path: Path
) -> Iterator[Workers]:
    """Workers for one test; stopped before its rows are cleaned up (hence `wdb`)."""
    started = Workers(worker_database, emulators, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
