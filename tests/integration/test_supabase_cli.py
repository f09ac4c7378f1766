"""The real Supabase CLI (npm `supabase`, pinned in tools/npm) against our migrations.

It pushes into a fresh database shaped like a new hosted project (platform roles, `postgres`
not a superuser), exactly as CI would run it: no standard input, CI=true. A client nobody here
wrote must agree with `callpanion migrate` on what has been applied.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack
from python_worker.stack.typegen import node_modules
from tests.support.db import PROJECT_DIR

CLI = node_modules(PROJECT_DIR) / ".bin" / "supabase"
CLI_VERSION = "2.117.0"
#: A row of `supabase migration list`: local version | remote version | time.
LIST_ROW = re.compile(r"^\s*`?(\d*)`?\s*\|\s*`?(\d*)`?\s*\|", re.MULTILINE)


def supabase(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as CI does: no stdin, CI=true, its own HOME, our project folder."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "CI": "true",
        "DO_NOT_TRACK": "1",
    }
    return subprocess.run(
        [str(CLI), "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's supabase/ folder, so the CLI's supabase/.temp stays out of ours."""
    root = tmp_path_factory.mktemp("supabase-cli")
    shutil.copytree(
        PROJECT_DIR / "supabase",
        root / "supabase",
        ignore=shutil.ignore_patterns(".temp", "types"),
    )
    return root


@pytest.fixture
def fresh_url(pg_stack: LocalStack) -> Iterator[str]:
    url = pg_stack.create_database("cli")
    try:
        yield url
    finally:
        pg_stack.drop_database(url)


def cli_url(url: str) -> str:
    return url + "?sslmode=disable"


def listed(workdir: Path, url: str) -> list[tuple[str, str]]:
    proc = supabase(workdir, "migration", "list", "--db-url", cli_url(url))
    assert proc.returncode == 0, proc.stderr
    return LIST_ROW.findall(proc.stdout)


def all_versions() -> list[str]:
    return [m.version for m in migrations.discover(PROJECT_DIR / "supabase" / "migrations")]


def recorded(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, name from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [(str(v), str(n)) for v, n in rows]


def test_the_pinned_cli_is_installed() -> None:
    proc = subprocess.run([str(CLI), "--version"], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == CLI_VERSION


def test_db_push_applies_everything_then_agrees_with_migrate_and_repeats_as_a_no_op(
    workdir: Path, fresh_url: str
) -> None:
    first = supabase(workdir, "db", "push", "--db-url", cli_url(fresh_url), "--yes")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("Applying migration ") == len(all_versions())
    history = recorded(fresh_url)
    assert [v for v, _ in history] == all_versions()
    # What the CLI recorded is what our runner reads: nothing left to apply.
    with migrations.connect(fresh_url) as conn:
        assert migrations.apply_migrations(conn, PROJECT_DIR / "supabase" / "migrations") == []
    assert listed(workdir, fresh_url) == [(v, v) for v in all_versions()]
    again = supabase(workdir, "db", "push", "--db-url", cli_url(fresh_url), "--yes")
    assert again.returncode == 0, again.stderr
    assert "Remote database is up to date." in again.stdout
    assert recorded(fresh_url) == history


def test_the_cli_sees_what_callpanion_migrate_applied(workdir: Path, fresh_url: str) -> None:
    with migrations.connect(fresh_url) as conn:
        conn.execute("set client_min_messages = error")
        migrations.apply_migrations(conn, PROJECT_DIR / "supabase" / "migrations")
    assert listed(workdir, fresh_url) == [(v, v) for v in all_versions()]
