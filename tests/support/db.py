"""The test clusters (a private Postgres 15 + pg_cron cluster per session) and SQL helpers.

A cluster is created fresh in `<stack root>/tests/<name>` (`.callpanion/`, or the /var/tmp
fallback of config.default_stack_root) on a free port (never the developer's
stack on 54322), fully migrated, and stopped when the session ends. As on hosted Supabase, the
platform stand-ins run as the superuser `supabase_admin` and the migrations as `postgres`, which
is not one; tests connect as `postgres` too. Each test gets a
connection inside a transaction that is rolled back, so tests do not see each other's rows.
The fixtures themselves live in the tiers' conftests; tests import helpers from here only.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import LiteralString

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import dict_row

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.stack import cluster
from python_worker.stack.cluster import LocalStack
from python_worker.stack.settings import default_stack_root, stack_settings

PROJECT_DIR = DEFAULT_PROJECT_DIR
#: A free loopback port (the stack's own helper), for the tests' servers and clusters.
free_port = cluster.free_port

Conn = psycopg.Connection[dict[str, object]]


def make_stack(name: str) -> LocalStack:
    """A LocalStack with its own folder and a free port, for tests."""
    base = stack_settings({})
    settings = base.model_copy(
        update={
            "stack_dir": default_stack_root(PROJECT_DIR) / "tests" / name,
            "port": free_port(),
        }
    )
    return LocalStack(settings)


@contextmanager
def migrated_stack(name: str) -> Iterator[LocalStack]:
    """A fresh, fully migrated test cluster with pg_cron's jobs off (each tier's `pg_stack`)."""
    with throwaway_stack(name) as stack:
        stack.up()
        with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
            # Tests drive the phases with an explicit p_now; background runs only add noise.
            # The one test that proves pg_cron runs them switches the jobs on for itself.
            # (`postgres` may only read cron.job, as on hosted Supabase: alter_job, not UPDATE.)
            conn.execute("select cron.alter_job(jobid, active := false) from cron.job")
        yield stack


@contextmanager
def throwaway_stack(name: str) -> Iterator[LocalStack]:
    """A test cluster that starts from nothing and is stopped and deleted afterwards."""
    stack = make_stack(name)
    stack.down()
    shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
    try:
        yield stack
    finally:
        stack.down()
        shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            stack.settings.stack_dir.parent.rmdir()  # the shared tests/ folder, once empty


@contextmanager
def rolled_back(database_url: str) -> Iterator[Conn]:
    """A connection as `postgres` (shaped like hosted Supabase's: not a superuser, but it owns
    the schema and bypasses RLS) in a transaction that is rolled back afterwards (`db`)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute("begin")
        try:
            yield conn
        finally:
            conn.rollback()


@contextmanager
def acting_as(conn: Conn, role: str, user_id: object | None = None) -> Iterator[Conn]:
    """Run statements as PostgREST would for a request: `role` plus JWT claims.

    Everything inside happens in a savepoint that is always rolled back, so a permitted
    write does not leak into the next check.
    """
    claims: dict[str, object] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
        yield conn


def affected(conn: Conn, query: LiteralString, params: Params | None = None) -> int:
    """How many rows a statement with RETURNING touched (0 when RLS hid them)."""
    return len(conn.execute(query, params).fetchall())


def one(
    conn: Conn, query: LiteralString | sql.Composed, params: Params | None = None
) -> dict[str, object]:
    """Run a query that must return exactly one row."""
    rows = conn.execute(query, params).fetchall()
    assert len(rows) == 1, (query, rows)
    row = rows[0]
    return row


def stack_env(stack: LocalStack, **extra: str) -> dict[str, str]:
    """Environment that points the CLI at a test stack."""
    return {
        "CALLPANION_STACK_DIR": str(stack.settings.stack_dir),
        "CALLPANION_DB_PORT": str(stack.settings.port),
        **extra,
    }
