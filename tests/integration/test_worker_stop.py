"""A stop that always stops: SIGTERM ends `callpanion worker` within STOP_BOUND_S, whatever the
providers and the database are doing, after giving back the rows it has not sent and
recording the results it has. A second SIGTERM or SIGINT ends it at once.

Real worker processes and real signals. Every wait is for a fact (the process's exit, a row's
state, a connection accepted by the silent host), bounded by the contract being tested.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.emulators.faults import ANY, Fault
from python_worker.emulators.suite import ThreadedSuite
from python_worker.stack.cluster import LocalStack, free_port
from python_worker.stack.settings import default_stack_root, stack_settings
from python_worker.worker.settings import DEFAULT_SHUTDOWN_GRACE_SECS
from tests.support.stop import SilentHost, service_account_pointing_at
from tests.support.worker import (
    Conn,
    WorkerProcess,
    Workers,
    add_relative,
    metric,
    queue_call,
    queue_many,
    queue_row,
    wait_for,
)

#: The stated bound (README, "Stopping the worker"): a SIGTERM'd worker has exited within
#: this long, which is `docker stop`'s default grace before it kills.
STOP_BOUND_S = 10.0


def test_the_default_grace_fits_the_stated_bound() -> None:
    assert DEFAULT_SHUTDOWN_GRACE_SECS < STOP_BOUND_S


def silent_providers(workers: Workers, host: SilentHost, tmp_path: Path) -> dict[str, str]:
    """Worker settings whose OAuth token endpoint and APNs host accept and never answer."""
    account = service_account_pointing_at(
        workers.emulators.suite.endpoints.service_account_file,
        f"https://127.0.0.1:{host.port}/token",
        tmp_path / "silent-account.json",
    )
    return {
        "FCM_SERVICE_ACCOUNT_FILE": str(account),
        "APNS_HOST": "127.0.0.1",
        "APNS_PORT": str(host.port),
    }


def start(workers: Workers, env: dict[str, str]) -> WorkerProcess:
    """`workers.start` with settings built at run time (mypy cannot tell such a dict has no
    `wait_healthy` key)."""
    return workers.start(**env)  # type: ignore[arg-type]


def stopping(worker: WorkerProcess) -> bool:
    return any(line["msg"].startswith("stopping") for line in worker.logs())


def held_by(conn: Conn, worker: WorkerProcess) -> int:
    row = conn.execute(
        "select count(*) as n from notification_queue where locked_by like %s",
        [worker.worker_id + "#%"],
    ).fetchone()
    assert row is not None
    return int(row["n"])


def stop_and_expect_exit(worker: WorkerProcess, conn: Conn) -> None:
    """SIGTERM; the process exits cleanly within the bound and holds no row any more."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(STOP_BOUND_S) == 0, worker.log_file.read_text()[-3000:]
    print(f"stopped in {time.monotonic() - started:.2f} s")  # a figure for `-s`, not a check
    assert held_by(conn, worker) == 0
    assert [line["msg"] for line in worker.logs()][-1] == "worker stopped"


def test_sigterm_ends_a_worker_whose_token_endpoint_and_apns_host_never_answer(
    wdb: Conn, workers: Workers, tmp_path: Path
) -> None:
    with SilentHost() as host:
        settings = silent_providers(workers, host, tmp_path)
        settings["CALLPANION_SHUTDOWN_GRACE_SECS"] = str(DEFAULT_SHUTDOWN_GRACE_SECS)
        worker = start(workers, settings)
        android = queue_call(wdb, add_relative(wdb, "android", voip=False))
        ios = queue_call(wdb, add_relative(wdb, "ios"))
        wait_for("both sends to hang on the silent host", lambda: host.accepted >= 2)
        stop_and_expect_exit(worker, wdb)
    for qid in (android, ios):
        row = queue_row(wdb, qid)
        assert (row["status"], row["locked_by"]) in {("due", None), ("queued", None)}, row


def test_sigterm_ends_a_worker_whose_providers_refuse_connections(
    wdb: Conn, workers: Workers, tmp_path: Path
) -> None:
    closed = free_port()
    account = service_account_pointing_at(
        workers.emulators.suite.endpoints.service_account_file,
        f"https://127.0.0.1:{closed}/token",
        tmp_path / "refused-account.json",
    )
    worker = workers.start(
        FCM_SERVICE_ACCOUNT_FILE=str(account), APNS_HOST="127.0.0.1", APNS_PORT=str(closed)
    )
    qid = queue_call(wdb, add_relative(wdb, "ios"))
    wait_for(
        "the refused send to be recorded as a retry",
        lambda: queue_row(wdb, qid)["last_error"] is not None,
    )
    stop_and_expect_exit(worker, wdb)


def apns_answers_read(worker: WorkerProcess) -> float:
    """APNs answers the worker has read and classified delivered (its /metrics)."""
    text = worker.get("/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("callpanion_pushes_total{")
        and 'provider="apns"' in line
        and 'outcome="delivered"' in line
    )


def test_sigterm_mid_request_on_hanging_providers_records_what_was_sent_and_gives_back_the_rest(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    """Mid-burst: answered pushes are recorded, hanging ones are given back, none is left."""
    emulators.suite.fcm.faults.add(ANY, Fault(latency_s=600.0))  # Android hangs mid-request
    worker = workers.start(CALLPANION_BATCH_SIZE="100")
    ids = queue_many(wdb, 400, in_s=0.5)  # half iOS (answered), half Android (hanging)
    # The fact the stop must keep: the worker has read all 200 iOS answers (its own counter,
    # not the emulator's, which counts a push before its answer reaches the worker) while the
    # Android half hangs.
    wait_for(
        "the iOS half to be answered and the Android half to hang",
        # This worker is new: its counters are this test's alone, the emulator's are not.
        lambda: apns_answers_read(worker) == 200 and metric(worker, "callpanion_in_flight") == 200,
        timeout=60,
    )
    stop_and_expect_exit(worker, wdb)
    rows = wdb.execute(
        "select status, locked_by, push_token from notification_queue where id = any(%s)", [ids]
    ).fetchall()
    statuses = collections.Counter(r["status"] for r in rows)
    assert statuses == {"sent": 200, "due": 200}, statuses
    # The emulators serve the whole session: a push an earlier test left hanging may land
    # here late, so only this test's tokens count.
    ours = {r["push_token"] for r in rows}
    delivered = {d.token for d in emulators.suite.apns.deliveries} & ours
    assert {r["push_token"] for r in rows if r["status"] == "sent"} == delivered


def test_a_second_sigterm_or_sigint_ends_the_worker_at_once(
    wdb: Conn, workers: Workers, tmp_path: Path
) -> None:
    for second in (signal.SIGTERM, signal.SIGINT):
        with SilentHost() as host:
            # A grace far beyond the bound: only the second signal can end it in time.
            settings = silent_providers(workers, host, tmp_path)
            settings["CALLPANION_SHUTDOWN_GRACE_SECS"] = "600"
            worker = start(workers, settings)
            queue_call(wdb, add_relative(wdb, "ios"))
            wait_for("the send to hang", lambda: host.accepted >= 1)
            worker.signal(signal.SIGTERM)
            wait_for(
                "the graceful stop to begin",
                lambda w=worker: stopping(w),  # type: ignore[misc]
            )
            worker.signal(second)
            assert worker.wait(STOP_BOUND_S) == 128 + second
            # Its rows come back through the presence lock, which died with the process.


def test_a_hanging_provider_cannot_hold_a_call_past_its_deadline_without_a_reason(
    wdb: Conn, workers: Workers, tmp_path: Path
) -> None:
    with SilentHost() as host:
        start(workers, silent_providers(workers, host, tmp_path))
        # A deadline shorter than any provider timeout: only the deadline can end the wait.
        ids = [
            queue_call(wdb, add_relative(wdb, "ios"), deadline_s=3.0),
            queue_call(wdb, add_relative(wdb, "android", voip=False), deadline_s=3.0),
        ]
        wait_for(
            "the rows to leave their hanging sends with a reason",
            lambda: all(
                queue_row(wdb, qid)["status"] not in ("queued", "due", "claimed") for qid in ids
            ),
            timeout=30,
        )
    for qid in ids:
        row = queue_row(wdb, qid)
        assert row["status"] == "expired", row
        assert "deadline" in (row["last_error"] or ""), row


@pytest.fixture
def own_cluster() -> Iterator[tuple[LocalStack, str]]:
    """A cluster of its own, so stopping or freezing it disturbs no other test."""
    base = stack_settings({})
    stack = LocalStack(
        base.model_copy(
            update={
                "stack_dir": default_stack_root(DEFAULT_PROJECT_DIR) / "tests" / "worker-stop",
                "port": free_port(),
            }
        )
    )
    stack.down()
    try:
        stack.up(apply=False)
        yield stack, stack.create_migrated_database("stop")
    finally:
        stack.down()


def postgres_pids(stack: LocalStack) -> list[int]:
    """The postmaster and every backend of the cluster (to freeze them with SIGSTOP)."""
    pid_file = stack.settings.stack_dir / "pgdata" / "postmaster.pid"
    master = int(pid_file.read_text().split()[0])
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_sigterm_ends_a_worker_whose_database_is_gone(
    own_cluster: tuple[LocalStack, str], emulators: ThreadedSuite, tmp_path: Path, how: str
) -> None:
    """Stopped: connections refused. Frozen (SIGSTOP): every query hangs, nothing answers."""
    stack, url = own_cluster
    emulators.suite.apns.faults.add(ANY, Fault(latency_s=600.0))
    pool = Workers(url, emulators, tmp_path)
    frozen: list[int] = []
    try:
        worker = pool.start(CALLPANION_POLL_INTERVAL_SECS="0.2")
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            queue_call(conn, add_relative(conn, "ios"))
        wait_for("the send to hang", lambda: metric(worker, "callpanion_in_flight") == 1)
        if how == "stopped":
            stack.down()
        else:
            frozen = postgres_pids(stack)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(STOP_BOUND_S)
        print(f"stopped in {time.monotonic() - started:.2f} s ({how} database, exit {code})")
        messages = [line["msg"] for line in worker.logs()]
        if how == "stopped":
            assert code == 0, worker.log_file.read_text()[-3000:]
            assert "worker stopped" in messages
        else:
            # A frozen database can hold the event loop itself (a libpq call that blocks):
            # then the watchdog ends the stop at the bound, says so, and exits 70. Its rows
            # come back through its presence lock and leases once the database answers.
            assert code in (0, 70), worker.log_file.read_text()[-3000:]
            if code == 70:
                assert "stop overran the shutdown grace; exiting now" in messages
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        pool.stop_all()
