"""The local stack and the migration runner, on real clusters and through the real CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from python_worker.errors import StackError
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack, check_pg_cron, find_bindir
from tests.support.db import PROJECT_DIR, free_port, make_stack, stack_env, throwaway_stack


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "python_worker", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=PROJECT_DIR,
        timeout=180,
        check=False,
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def lifecycle_stack() -> Iterator[LocalStack]:
    with throwaway_stack("lifecycle") as stack:
        yield stack


def recorded_versions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [r[0] for r in rows]


def all_versions() -> list[str]:
    return [m.version for m in migrations.discover(PROJECT_DIR / "supabase" / "migrations")]


def test_up_from_nothing_applies_everything_and_is_idempotent(lifecycle_stack: LocalStack) -> None:
    first = lifecycle_stack.up()
    assert first.initialised
    assert first.started
    assert [m.version for m in first.applied] == all_versions()
    status = lifecycle_stack.status()
    assert status.running
    assert status.port == lifecycle_stack.settings.port

    again = lifecycle_stack.up()
    assert not again.initialised
    assert not again.started
    assert again.applied == []
    assert recorded_versions(lifecycle_stack.settings.database_url) == all_versions()
    with psycopg.connect(lifecycle_stack.settings.database_url) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "select name, setting from pg_settings where name in"
                " ('wal_level', 'listen_addresses', 'shared_preload_libraries', 'cron.database_name')"
            ).fetchall()
        )
    assert settings == {
        "wal_level": "logical",
        "listen_addresses": "127.0.0.1",
        "shared_preload_libraries": "pg_cron",
        "cron.database_name": "postgres",
    }


def test_down_stops_and_the_next_up_reuses_the_cluster(lifecycle_stack: LocalStack) -> None:
    lifecycle_stack.up()
    url = lifecycle_stack.settings.database_url
    marker = f"kept across restarts {uuid.uuid4()}"
    with psycopg.connect(url) as conn:
        conn.execute("insert into households (name) values (%s)", [marker])

    # A client still connected when the server stops leaves the port in TIME_WAIT; the next
    # `up` must not mistake that for another process holding the port.
    idle = psycopg.connect(url)
    assert lifecycle_stack.down() is True
    idle.close()
    assert lifecycle_stack.status().running is False
    assert port_is_free(lifecycle_stack.settings.port)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    assert lifecycle_stack.down() is False  # stopping a stopped stack is a no-op

    again = lifecycle_stack.up()
    assert not again.initialised
    assert again.started
    assert again.applied == []
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from households where name = %s", [marker]).fetchone()
    assert row == (1,)


def test_status_command_reports_running_and_stopped(lifecycle_stack: LocalStack) -> None:
    env = stack_env(lifecycle_stack)
    lifecycle_stack.up()
    running = run_cli("stack", "status", env=env)
    assert running.returncode == 0, running.stderr
    assert (
        f"running (pid {lifecycle_stack.status().pid}, port {lifecycle_stack.settings.port})"
        in running.stdout
    )
    assert "households" in running.stdout
    assert "rls=on" in running.stdout
    assert "rls=OFF" not in running.stdout

    down = run_cli("stack", "down", env=env)
    assert down.returncode == 0
    assert "stopped the local stack" in down.stdout
    stopped = run_cli("stack", "status", env=env)
    assert stopped.returncode == 3
    assert "local stack: stopped" in stopped.stdout


def test_reset_recreates_the_database_and_loads_the_seed(lifecycle_stack: LocalStack) -> None:
    lifecycle_stack.up()
    url = lifecycle_stack.settings.database_url
    with psycopg.connect(url) as conn:
        conn.execute("insert into households (name) values ('Temporary')")
    result = lifecycle_stack.reset()
    assert [m.version for m in result.applied] == all_versions()
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute("select name from households order by name").fetchall()]
        schedules = conn.execute("select count(*) from schedules").fetchone()
        # The scheduler runs in the new database: dropping the old one ended pg_cron's launcher.
        launcher = conn.execute(
            "select datname from pg_stat_activity where backend_type = 'pg_cron launcher'"
        ).fetchall()
        jobs = [
            r[0] for r in conn.execute("select jobname from cron.job where active order by jobname")
        ]
    assert names == ["The Smiths"]
    assert schedules == (2,)
    assert launcher == [("postgres",)]
    assert jobs == [
        "callpanion-alert-escalation",
        "callpanion-cleanup",
        "callpanion-phase1-queue",
        "callpanion-phase2-release",
    ]


def test_demo_reports_the_live_stack_and_loads_demo_data_once(lifecycle_stack: LocalStack) -> None:
    env = stack_env(lifecycle_stack)
    lifecycle_stack.up()
    with psycopg.connect(lifecycle_stack.settings.database_url, autocommit=True) as conn:
        conn.execute("delete from households")
    # `demo stack` is the demo's first part (the whole play is tests/e2e/test_whole_call.py's).
    first = run_cli("demo", "stack", env=env)
    assert first.returncode == 0, first.stderr
    assert "loaded the demo data" in first.stdout
    assert "callpanion-phase1-queue (* * * * *)" in first.stdout
    assert "Mum - Morning chat: " in first.stdout
    assert "Europe/London" in first.stdout
    assert f"CALLPANION_DB_PORT={lifecycle_stack.settings.port} make stop" in first.stdout
    again = run_cli("demo", "stack", env=env)
    assert again.returncode == 0, again.stderr
    assert "loaded the demo data" not in again.stdout  # never over data that is there
    with psycopg.connect(lifecycle_stack.settings.database_url) as conn:
        assert conn.execute("select count(*) from households").fetchone() == (1,)


def test_a_taken_port_is_reported_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = make_stack("port-taken")
        try:
            proc = run_cli(
                "stack",
                "up",
                env=stack_env(stack, CALLPANION_DB_PORT=str(port)),
            )
        finally:
            stack.down()
            shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
    assert proc.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use by another process" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_postgres_binaries_are_reported_clearly(tmp_path: Path) -> None:
    proc = run_cli(
        "stack", "up",
        env={"CALLPANION_PG_BINDIR": str(tmp_path / "nowhere"),
             "CALLPANION_STACK_DIR": str(tmp_path / "stack")},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "PostgreSQL 15+ server binaries (initdb, pg_ctl, postgres) not found" in proc.stderr
    assert "apt-get install postgresql-15" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_pg_cron_is_reported_clearly(tmp_path: Path) -> None:
    """A server installation without pg_cron: the real binaries, but a library dir without it."""
    real = find_bindir(None)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("initdb", "pg_ctl", "postgres"):
        (bindir / tool).symlink_to(real / tool)
    empty = tmp_path / "lib"
    empty.mkdir()
    (bindir / "pg_config").write_text(f"#!/bin/sh\necho {empty}\necho {empty}\n")
    (bindir / "pg_config").chmod(0o755)
    with pytest.raises(
        StackError, match="the pg_cron extension is not installed for PostgreSQL 15"
    ):
        check_pg_cron(bindir)
    proc = run_cli(
        "stack", "up",
        env={"CALLPANION_PG_BINDIR": str(bindir), "CALLPANION_STACK_DIR": str(tmp_path / "stack")},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "apt-get install postgresql-15-cron" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def scratch_db(database_url: str) -> Iterator[str]:
    """A fresh, empty database in the session cluster."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name)))
    try:
        yield database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("drop database {} with (force)").format(
                    psycopg.sql.Identifier(name)
                )
            )


def test_migrate_applies_from_scratch_then_is_a_no_op(scratch_db: str) -> None:
    first = run_cli("migrate", "--database-url", scratch_db, "--with-platform")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("applied migration") == len(all_versions())
    assert recorded_versions(scratch_db) == all_versions()
    # pg_cron belongs to the `postgres` database; elsewhere the user is told what to run.
    assert "warning: pg_cron does not run in database scratch_" in first.stderr
    assert "select public.queue_upcoming_calls()" in first.stderr
    second = run_cli("migrate", "--database-url", scratch_db)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "migrations: up to date"


def test_broken_migration_is_reported_and_not_recorded(scratch_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20990101000001_good.sql").write_text("create table good (id int);\n")
    broken = folder / "20990101000002_broken.sql"
    broken.write_text("create table half_done (id int);\n\nselec 1;\n")

    proc = run_cli("migrate", "--database-url", scratch_db, "--migrations-dir", str(folder))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: migration 20990101000002_broken.sql failed: ")
    assert 'syntax error at or near "selec"' in proc.stderr
    assert "(line 3)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert recorded_versions(scratch_db) == ["20990101000001"]
    with psycopg.connect(scratch_db) as conn:
        tables = conn.execute(
            "select to_regclass('good') is not null, to_regclass('half_done') is not null"
        ).fetchone()
    assert tables == (True, False)  # the failed file left nothing behind

    broken.write_text("create table half_done (id int);\n")
    fixed = run_cli("migrate", "--database-url", scratch_db, "--migrations-dir", str(folder))
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "applied migration 20990101000002_broken"
    assert recorded_versions(scratch_db) == ["20990101000001", "20990101000002"]


def test_misnamed_migration_file_is_an_error(scratch_db: str, tmp_path: Path) -> None:
    (tmp_path / "add_table.sql").write_text("select 1;")
    proc = run_cli("migrate", "--database-url", scratch_db, "--migrations-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "migration file add_table.sql is not named <version>_<name>.sql" in proc.stderr


def test_unreachable_database_is_reported_clearly() -> None:
    port = free_port()
    proc = run_cli(
        "migrate", "--database-url", f"postgresql://postgres:x@127.0.0.1:{port}/postgres"
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect to the database:")
    assert "Traceback" not in proc.stderr
