"""Issue 25, item 5: every refusal of a pairing does the same work, so timing cannot tell an
open pairing from an unknown one. Counted, not timed: plpgsql_check's profiler gives how
often each statement of claim_pairing_code ran, and pg_stat_xact_user_tables the rows each
call wrote, for every refusal path.

The one difference left is by design and asserted: the failed-attempt UPDATE runs on every
path but changes its row only for a wrong code at an open pairing (the per-code lock); every
path writes exactly one budget-counter row and commits.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from python_worker.stack.cluster import LocalStack
from tests.support.api import Family, Row, as_user, fetch, new_family

SqlConn = psycopg.Connection[Row]
CLAIM = "public.claim_pairing_code(uuid,text,text,text,text,text,text,text,text)"


@pytest.fixture
def admin(pg_stack: LocalStack, api_database: str) -> Iterator[SqlConn]:
    """A superuser connection to the API's database with plpgsql_check's profiler on."""
    name = api_database.rsplit("/", 1)[1]
    with psycopg.connect(
        pg_stack.admin_conninfo(name), autocommit=True, row_factory=dict_row
    ) as conn:
        conn.execute("create schema if not exists plpgsql_check")
        conn.execute("create extension if not exists plpgsql_check with schema plpgsql_check")
        conn.execute("set plpgsql_check.profiler = on")
        try:
            yield conn
        finally:
            conn.execute("drop extension plpgsql_check")
            conn.execute("drop schema plpgsql_check")


def _code(conn: SqlConn, family: Family) -> tuple[uuid.UUID, str]:
    row = as_user(conn, family.admin, "select * from create_pairing_code(%s)", [family.relative])
    return row[0]["pairing_id"], row[0]["code"]


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _unknown(conn: SqlConn) -> tuple[uuid.UUID, str]:
    return uuid.uuid4(), "123456"


def _wrong(conn: SqlConn) -> tuple[uuid.UUID, str]:
    pairing, code = _code(conn, new_family(conn))
    return pairing, _other(code)


def _expired(conn: SqlConn) -> tuple[uuid.UUID, str]:
    pairing, code = _code(conn, new_family(conn))
    conn.execute(
        "update device_pairs set pairing_code_expires_at = now() - interval '1 s' where id = %s",
        [pairing],
    )
    return pairing, code


def _locked(conn: SqlConn) -> tuple[uuid.UUID, str]:
    pairing, code = _code(conn, new_family(conn))
    conn.execute("update device_pairs set pairing_failed_attempts = 5 where id = %s", [pairing])
    return pairing, code


def _used(conn: SqlConn) -> tuple[uuid.UUID, str]:
    pairing, code = _code(conn, new_family(conn))
    assert _claim(conn, pairing, code) == "paired"
    return pairing, code


PATHS: dict[str, Callable[[SqlConn], tuple[uuid.UUID, str]]] = {
    "unknown id": _unknown,
    "wrong code": _wrong,
    "expired code": _expired,
    "locked code": _locked,
    "used code": _used,
}


def _claim(conn: SqlConn, pairing: uuid.UUID, code: str) -> str:
    row = fetch(
        conn,
        "select public.claim_pairing_code(%s, %s, %s, 'android', '2.3.0', 'Tablet', %s)"
        " ->> 'outcome' as outcome",
        [pairing, code, secrets.token_hex(32), "f" * 40],
    )
    outcome: str = row["outcome"]
    return outcome


def _table_writes(conn: SqlConn) -> dict[str, tuple[int, int, int]]:
    return {
        r["relname"]: (r["n_tup_ins"], r["n_tup_upd"], r["n_tup_del"])
        for r in conn.execute(
            "select relname, n_tup_ins, n_tup_upd, n_tup_del from pg_stat_xact_user_tables"
        ).fetchall()
    }


def _work(admin: SqlConn, pairing: uuid.UUID, code: str) -> dict[str, Any]:
    """What one refusal did: statements run (id -> times) and rows written per table."""
    admin.execute("select plpgsql_check.plpgsql_profiler_reset_all()")
    with admin.transaction():
        # The backend's not yet flushed counts may include earlier transactions: take the
        # difference around the call.
        before = _table_writes(admin)
        assert _claim(admin, pairing, code) == "invalid"
        after = _table_writes(admin)
        writes = {
            table: tuple(a - b for a, b in zip(counts, before.get(table, (0, 0, 0)), strict=True))
            for table, counts in after.items()
        }
        writes = {table: counts for table, counts in writes.items() if any(counts)}
        wal = fetch(admin, "select pg_current_xact_id_if_assigned() is not null as wrote")
    statements = {
        r["stmtid"]: r["exec_stmts"]
        for r in admin.execute(
            "select stmtid, exec_stmts from"
            " plpgsql_check.plpgsql_profiler_function_statements_tb(%s::regprocedure)"
            " where exec_stmts > 0",
            [CLAIM],
        ).fetchall()
    }
    return {"statements": statements, "writes": writes, "commits": wal["wrote"]}


def test_every_refusal_path_runs_the_same_statements_and_writes(
    admin: SqlConn, sql_conn: SqlConn
) -> None:
    work = {}
    for path, prepare in PATHS.items():
        pairing, code = prepare(sql_conn)
        work[path] = _work(admin, pairing, code)
    baseline = work["unknown id"]
    assert len(baseline["statements"]) > 10
    for path, done in work.items():
        assert done["statements"] == baseline["statements"], path
        assert done["commits"] is True, path  # every refusal writes, so every one commits
        # Exactly one budget-counter row, inserted or updated, on every path.
        ins, upd, dele = done["writes"].pop("pairing_budgets")
        assert (ins + upd, dele) == (1, 0), path
        expected = {"device_pairs": (0, 1, 0)} if path == "wrong code" else {}
        assert done["writes"] == expected, path
