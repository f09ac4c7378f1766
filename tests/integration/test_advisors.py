"""Supabase's own advisors (the hosted dashboard's Security and Performance Advisors) on our schema.

The pinned CLI's `supabase db advisors --fail-on warn` runs the same lints the dashboard shows
a user who opens a hosted project. On a freshly migrated database (the session's cluster,
with pg_cron, shaped like hosted) it must find no WARN and no ERROR. Of the INFO lints:
- `unindexed_foreign_keys` must be empty (every key is followed by a cascade or SET NULL);
- `rls_enabled_no_policy` is intended where it appears, and the table's own comment says why;
- `unused_index` is ignored: it reads the statistics of a database that has served no queries.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.stack.cluster import LocalStack
from python_worker.stack.typegen import node_modules

CLI = node_modules(DEFAULT_PROJECT_DIR) / ".bin" / "supabase"
#: INFO lints that describe a database's statistics, not its schema (see the module docstring).
STATISTICS_LINTS = {"unused_index"}


def advisors(url: str, home: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Run `supabase db advisors --fail-on warn` as CI would; (exit code, findings, stderr)."""
    proc = subprocess.run(
        [str(CLI), "db", "advisors", "--db-url", url + "?sslmode=disable", "--level", "info",
         "--fail-on", "warn", "--output-format", "json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180, check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "CI": "true",
             "DO_NOT_TRACK": "1"},
        cwd=home,
    )  # fmt: skip
    results: list[dict[str, Any]] = json.loads(proc.stdout)["results"] if proc.stdout else []
    return proc.returncode, results, proc.stderr


def findings(results: list[dict[str, Any]], *levels: str) -> list[str]:
    return sorted(
        f"{r['level']} {r['name']}: {r['detail']}" for r in results if r["level"] in levels
    )


def test_the_advisors_find_no_warning_or_error_on_a_freshly_migrated_database(
    pg_stack: LocalStack, tmp_path: Path
) -> None:
    code, results, stderr = advisors(pg_stack.settings.database_url, tmp_path)
    assert findings(results, "WARN", "ERROR") == []
    assert code == 0, stderr
    info = [r for r in results if r["level"] == "INFO" and r["name"] not in STATISTICS_LINTS]
    assert [r["detail"] for r in info if r["name"] == "unindexed_foreign_keys"] == []
    assert {r["name"] for r in info} <= {"rls_enabled_no_policy"}, findings(results, "INFO")
    tables = [r["metadata"]["schema"] + "." + r["metadata"]["name"] for r in info]
    with psycopg.connect(pg_stack.settings.database_url) as conn:
        for table in tables:
            row = conn.execute("select obj_description(%s::regclass, 'pg_class')", [table])
            comment = (row.fetchone() or [None])[0]
            assert comment is not None, table
            assert "rls_enabled_no_policy" in comment, (table, comment)


@pytest.fixture
def scratch_url(pg_stack: LocalStack) -> Any:
    with pg_stack.scratch_database("advisors") as url:
        yield url


def test_a_function_without_a_fixed_search_path_fails_the_advisors(
    scratch_url: str, tmp_path: Path
) -> None:
    """What a helper's `create or replace` without `set search_path = ''` would do."""
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(
            "create function private.forgot_the_path() returns int language sql as 'select 1'"
        )
    code, results, _ = advisors(scratch_url, tmp_path)
    assert code != 0
    assert findings(results, "WARN") == [
        "WARN function_search_path_mutable: Function `private.forgot_the_path` has a role"
        " mutable search_path"
    ]
