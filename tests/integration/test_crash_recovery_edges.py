"""Crash recovery under concurrency and across a restart (issue 26).

Real sessions: a worker's presence lock lives on a connection of its own, and is gone when
that connection ends. Rows claimed under it are taken back by the next claim, except:
rows another worker holds locked right now (skip locked: the claim must not wait), rows of an
owner still present, and rows claimed before the server started (a restart drops every lock
while the workers reconnect; those rows are left to their lease).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.stack.cluster import LocalStack
from tests.support.db import throwaway_stack
from tests.support.worker import Conn, add_relative, queue_call, wait_for

LIVE = """select 1 from pg_locks l
           where l.locktype = 'advisory' and l.granted and l.objsubid = 2
             and l.classid::text::bigint = private.worker_lock_space()
             and l.objid::text::bigint = (private.worker_lock_key(%s)::bigint & 4294967295)"""


def claim(conn: Conn, worker: str, lease: str = "5 minutes") -> list[uuid.UUID]:
    rows = conn.execute(
        "select queue_id from claim_due_calls(%s, 10, %s::interval)", [worker, lease]
    ).fetchall()
    return sorted(r["queue_id"] for r in rows)


def queue(conn: Conn, qid: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("select * from notification_queue where id = %s", [qid]).fetchone()
    assert row is not None
    return row


def claimed_while_present(url: str, wdb: Conn, worker: str, n: int) -> list[uuid.UUID]:
    """`n` rows claimed by `worker` under its presence lock, which is then gone (its
    session ended as a killed process's does)."""
    ids = [queue_call(wdb, add_relative(wdb, "ios")) for _ in range(n)]
    with psycopg.connect(url, autocommit=True) as presence:
        assert presence.execute("select register_worker(%s)", [worker]).fetchone() == (True,)
        assert claim(wdb, worker) == sorted(ids)
    wait_for(f"{worker}'s lock to go", lambda: not wdb.execute(LIVE, [worker]).fetchall())
    for qid in ids:
        assert queue(wdb, qid)["presence_claimed_at"] is not None
    return sorted(ids)


def test_a_reclaim_skips_an_orphan_another_worker_holds_and_takes_it_later(
    worker_database: str, wdb: Conn
) -> None:
    held, free = claimed_while_present(worker_database, wdb, f"dead-{uuid.uuid4().hex[:6]}", 2)
    with (
        psycopg.connect(worker_database, row_factory=dict_row) as holder,
        psycopg.connect(worker_database, row_factory=dict_row) as other,
    ):
        # The dead worker's row is locked by a live session right now (a phase 2 run, a
        # late record of that row): the reclaim must go past it, not wait for it.
        holder.execute("select 1 from notification_queue where id = %s for update", [held])
        other.execute("set lock_timeout = '2s'")
        assert claim(other, "worker-b") == [free]
        other.commit()
        row = queue(wdb, held)
        assert row["status"] == "claimed"
        assert row["locked_by"].startswith("dead-")
        holder.rollback()
    assert claim(wdb, "worker-b") == [held]  # once free, taken back at the next claim
    assert "is gone (its database session ended)" in queue(wdb, held)["last_error"]


def test_an_owner_whose_lock_key_is_negative_is_still_seen_alive(
    worker_database: str, wdb: Conn
) -> None:
    # hashtext() is signed; pg_locks shows the key unsigned. An owner with a negative hash
    # must still be found among the live ones, or its rows are taken while it sends them.
    name = wdb.execute(
        "select 'live-' || n as name from generate_series(1, 1000) n"
        " where private.worker_lock_key('live-' || n) < 0 limit 1"
    ).fetchone()
    assert name is not None
    worker = name["name"]
    qid = queue_call(wdb, add_relative(wdb, "ios"))
    with psycopg.connect(worker_database, autocommit=True) as presence:
        assert presence.execute("select register_worker(%s)", [worker]).fetchone() == (True,)
        assert claim(wdb, worker) == [qid]
        assert queue(wdb, qid)["presence_claimed_at"] is not None  # claimed as present
        assert claim(wdb, "worker-b") == []
        assert (queue(wdb, qid)["status"], queue(wdb, qid)["locked_by"]) == ("claimed", worker)
    # Once its session ends, the same key is seen gone and the row comes back at once.
    wait_for(f"{worker}'s lock to go", lambda: not wdb.execute(LIVE, [worker]).fetchall())
    assert claim(wdb, "worker-b") == [qid]


def test_a_lock_of_the_same_name_in_another_database_does_not_keep_rows(
    worker_database: str, database_url: str, wdb: Conn
) -> None:
    # Presence is per database: a worker of another project's database sharing the name
    # does not make this database's dead worker look alive.
    worker = f"twin-{uuid.uuid4().hex[:6]}"
    [qid] = claimed_while_present(worker_database, wdb, worker, 1)
    with psycopg.connect(database_url, autocommit=True) as elsewhere:
        assert elsewhere.execute("select register_worker(%s)", [worker]).fetchone() == (True,)
        assert claim(wdb, "worker-b") == [qid]


@pytest.fixture(scope="module")
def restartable() -> Iterator[tuple[LocalStack, str]]:
    with throwaway_stack("crash-restart") as stack:
        stack.up(apply=False)
        yield stack, stack.create_migrated_database("crash_restart")


def test_rows_claimed_before_a_restart_are_left_to_their_lease(
    restartable: tuple[LocalStack, str],
) -> None:
    stack, url = restartable
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        before = queue_call(conn, add_relative(conn, "ios"))
        presence = psycopg.connect(url, autocommit=True)
        assert presence.execute("select register_worker('before')").fetchone() == (True,)
        assert claim(conn, "before") == [before]
    stack.down()  # every session and lock is gone; the worker would be reconnecting
    presence.close()
    stack.up(apply=False)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        assert claim(conn, "after") == []
        row = queue(conn, before)
        assert (row["status"], row["locked_by"]) == ("claimed", "before")
        # A row claimed under a lock since the restart is reclaimed as usual.
        since = queue_call(conn, add_relative(conn, "ios"))
        with psycopg.connect(url, autocommit=True) as again:
            assert again.execute("select register_worker('since')").fetchone() == (True,)
            assert claim(conn, "since") == [since]
        wait_for("since's lock to go", lambda: not conn.execute(LIVE, ["since"]).fetchall())
        assert claim(conn, "after") == [since]
        assert queue(conn, before)["locked_by"] == "before"
