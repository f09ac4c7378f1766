"""`worker/presence.py` on its own: the advisory lock a worker holds while it lives.

Issue 26. A cluster of this module's own (it is restarted). The lock is observed where
Postgres keeps it (pg_locks), the presence connection's backend ended with
pg_terminate_backend, and time is an injected clock, so the retry throttle is asserted by
what is asked of the database, never by waiting.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack
from python_worker.worker.presence import Presence
from tests.support.db import throwaway_stack
from tests.support.worker import wait_for

HOLDER = """select l.pid from pg_locks l
             where l.locktype = 'advisory' and l.granted and l.objsubid = 2
               and l.classid::text::bigint = private.worker_lock_space()
               and l.objid::text::bigint = (private.worker_lock_key(%s)::bigint & 4294967295)"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalStack, str]]:
    with throwaway_stack("presence") as stack:
        stack.up(apply=False)
        yield stack, stack.create_migrated_database("presence")


@pytest.fixture
def url(cluster: tuple[LocalStack, str]) -> str:
    return cluster[1]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def owner() -> str:
    return f"presence-test#{uuid.uuid4().hex[:8]}"


def holders(url: str, who: str) -> list[int]:
    """The backends holding `who`'s presence lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(HOLDER, [who]).fetchall()]


def terminate(url: str, pid: int) -> None:
    """End a backend as a dropped network or a server-side kill would, and wait until gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", [pid])

        def gone() -> bool:
            row = conn.execute("select count(*) from pg_stat_activity where pid = %s", [pid])
            return row.fetchone() == (0,)

        wait_for(f"backend {pid} to end", gone)


def test_the_lock_is_taken_held_as_the_service_role_and_dropped_on_close(url: str) -> None:
    who = owner()
    presence = Presence(url, "service_role", who, clock=Clock())
    assert not presence.held

    async def go() -> None:
        await presence.ensure()
        assert presence.held
        [pid] = holders(url, who)
        assert presence._conn is not None
        cursor = await presence._conn.execute("select current_user, pg_backend_pid()")
        assert await cursor.fetchone() == ("service_role", pid)
        # Autocommit: never left idle in a transaction (which a pooler or a timeout ends).
        assert presence._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await presence.ensure()  # asked again: the same lock, not a second one
        assert holders(url, who) == [pid]
        await presence.close()
        assert not presence.held
        await presence.close()  # twice is fine

    asyncio.run(go())
    assert holders(url, who) == []


def test_a_lock_another_live_session_holds_is_refused_at_first_start(url: str) -> None:
    who = owner()
    with psycopg.connect(url, autocommit=True) as other:
        assert other.execute("select register_worker(%s)", [who]).fetchone() == (True,)
        [other_pid] = holders(url, who)
        presence = Presence(url, None, who, clock=Clock())
        with pytest.raises(CallPanionError) as refused:
            asyncio.run(presence.ensure())
        assert str(refused.value) == (
            f"lease owner {who!r} is held by another live database session; "
            "two processes must not share a lease owner"
        )
        assert not presence.held
        assert holders(url, who) == [other_pid]

        # Its connection was closed, not left open beside the other session's (a connection
        # the test itself just closed may take a moment to leave pg_stat_activity).
        def others() -> bool:
            row = other.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and backend_type = 'client backend'"
            ).fetchone()
            return row == (0,)

        wait_for("only the other session to be connected", others, timeout=10)


def test_a_lost_connection_is_noticed_at_the_next_check_and_the_lock_taken_again(
    url: str,
) -> None:
    who = owner()
    clock = Clock()
    presence = Presence(url, None, who, clock=clock)

    async def go() -> None:
        await presence.ensure()
        [first] = holders(url, who)
        terminate(url, first)
        clock.now += 0.75  # checked less than a second ago: not asked again yet
        await presence.ensure()
        assert holders(url, who) == []
        clock.now += 0.25  # exactly a second since the last check: checked, found dead, re-taken
        await presence.ensure()
        assert presence.held
        [second] = holders(url, who)
        assert second != first
        # A live connection is checked once a second too, and stays.
        clock.now += 1.0
        await presence.ensure()
        assert holders(url, who) == [second]
        # Any longer since the last check (a busy loop, a slow claim) is a check as well.
        terminate(url, second)
        clock.now += 1.5
        await presence.ensure()
        [third] = holders(url, who)
        assert third not in (first, second)
        await presence.close()

    asyncio.run(go())


def test_a_refusal_after_the_lock_was_once_held_is_retried_once_a_second(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The old session is not yet reaped by the server (here: another session holds the lock)
    # when the process reconnects: it carries on, and tries again later, not on every claim.
    who = owner()
    clock = Clock()
    presence = Presence(url, None, who, clock=clock)

    async def go() -> None:
        await presence.ensure()
        [first] = holders(url, who)
        terminate(url, first)
        with psycopg.connect(url, autocommit=True) as squatter:
            squatter.execute("select register_worker(%s)", [who])
            clock.now += 1.0
            with caplog.at_level(logging.WARNING, logger="callpanion.worker"):
                await presence.ensure()  # refused, but no error: it was ours before
            assert not presence.held
            assert "presence lock still held by an older session; retrying" in caplog.text
        # The squatter is gone; less than a second after the refusal nothing is asked.
        wait_for("the squatter's lock to go", lambda: holders(url, who) == [])
        clock.now += 0.5
        await presence.ensure()
        assert not presence.held
        assert holders(url, who) == []
        clock.now += 0.5
        await presence.ensure()
        assert presence.held
        assert len(holders(url, who)) == 1
        await presence.close()

    asyncio.run(go())


def test_the_lock_is_taken_again_after_the_database_restarts(
    cluster: tuple[LocalStack, str],
) -> None:
    stack, url = cluster
    who = owner()
    clock = Clock()
    presence = Presence(url, None, who, clock=clock)

    async def go() -> None:
        await presence.ensure()
        assert len(holders(url, who)) == 1
        stack.down()  # fast shutdown: every session ends, every lock is gone
        clock.now += 1.0
        with pytest.raises(psycopg.OperationalError):
            await presence.ensure()  # the caller backs off
        assert not presence.held
        stack.up(apply=False)
        clock.now += 1.0
        await presence.ensure()
        assert presence.held
        assert len(holders(url, who)) == 1
        await presence.close()

    asyncio.run(go())


def test_a_registration_the_database_refuses_closes_its_connection(url: str) -> None:
    presence = Presence(url, None, "", clock=Clock())  # no owner: register_worker refuses
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        asyncio.run(presence.ensure())
    assert not presence.held
    with psycopg.connect(url, autocommit=True) as conn:

        def alone() -> bool:
            row = conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and backend_type = 'client backend'"
            ).fetchone()
            return row == (0,)

        wait_for("the refused connection to be closed", alone, timeout=10)
