"""The orphan reclaim and the peer check read the distinct owners of claimed rows (issue 23):
only the rows of the owner whose presence lock is gone come back, whichever owner sorts first,
and a peer is seen whichever side of this worker's name it sorts on.

Real presence locks, each on a session of its own; time through p_now.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg.rows import dict_row

from tests.integration.test_dispatch_sql import (
    AT,
    claim,
    queue_row,
    queued_call,
    wait_until_locks_gone,
)
from tests.support.db import Conn, one


def test_only_the_rows_of_the_owner_whose_lock_is_gone_come_back(
    db: Conn, database_url: str
) -> None:
    families = [queued_call(db)[0] for _ in range(3)]
    db.execute("commit")  # the presence locks live in other sessions, which must see the rows
    owners = ("w-a", "w-b", "w-c")  # the dead one sorts between two live ones
    sessions = {
        name: psycopg.connect(database_url, autocommit=True, row_factory=dict_row)
        for name in owners
    }
    try:
        held = {}
        for name, session in sessions.items():
            assert one(session, "select register_worker(%s) as held", [name])["held"]
            [row] = claim(db, name, AT, limit=1)
            held[name] = row["queue_id"]
        peers = one(db, "select peer_leases from next_work_at(%s, 'w-c')", [AT])
        assert peers["peer_leases"] is True  # the others sort before w-c
        dead_pid = sessions["w-b"].info.backend_pid
        sessions.pop("w-b").close()
        wait_until_locks_gone(database_url, dead_pid)
        # w-a's claim takes back w-b's row (due again at once) and nobody else's.
        again = claim(db, "w-a", AT + timedelta(seconds=1))
        assert [r["queue_id"] for r in again] == [held["w-b"]]
        assert "worker w-b is gone" in queue_row(db, held["w-b"])["last_error"]
        for name in ("w-a", "w-c"):
            row = queue_row(db, held[name])
            assert (row["status"], row["locked_by"]) == ("claimed", name)
        peers = one(db, "select peer_leases from next_work_at(%s, 'w-a')", [AT])
        assert peers["peer_leases"] is True  # w-c sorts after w-a
    finally:
        for session in sessions.values():
            session.close()
        db.execute("rollback")
        for fam in families:
            db.execute("delete from households where id = %s", [fam.household])
            db.execute("delete from auth.users where id = %s", [fam.member])
        db.execute("commit")
