"""Apply the platform stand-ins, the Supabase migrations and the seed to a Postgres database.

Applied migrations are recorded in `supabase_migrations.schema_migrations` exactly as the
Supabase CLI records them (version, name, statements), so a database migrated here and one
migrated by `supabase db push` agree on what has been applied.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from python_worker.errors import CallPanionError, MigrationError

#: Supabase CLI file naming: `<version>_<name>.sql`, the version being digits (a UTC timestamp).
MIGRATION_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.sql$")
#: Serialises concurrent `migrate` runs against one database.
MIGRATE_LOCK_KEY = 7_231_044_001

_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key
);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: str
    name: str
    path: Path


def discover(migrations_dir: Path) -> list[Migration]:
    """Migration files in version order; a misnamed `.sql` file is an error, not ignored."""
    if not migrations_dir.is_dir():
        raise CallPanionError(f"migrations folder {migrations_dir} does not exist")
    found: list[Migration] = []
    seen: dict[str, Path] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise CallPanionError(
                f"migration file {path.name} is not named <version>_<name>.sql "
                "(version = digits, e.g. 20261123000100_schema.sql)"
            )
        version = match["version"]
        if version in seen:
            raise CallPanionError(
                f"migration version {version} is used by both {seen[version].name} and {path.name}"
            )
        seen[version] = path
        found.append(Migration(version=version, name=match["name"], path=path))
    return sorted(found, key=lambda m: int(m.version))


def _describe(error: psycopg.Error, text: str) -> str:
    """The database's message with its detail and hint, and the line it points at."""
    diag = error.diag
    parts = [diag.message_primary or str(error).strip()]
    if diag.statement_position:
        line = text.count("\n", 0, int(diag.statement_position) - 1) + 1
        parts.append(f"(line {line})")
    elif diag.context:
        parts.append(f"(context: {diag.context.strip().splitlines()[0]})")
    if diag.message_detail:
        parts.append(f"detail: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"hint: {diag.message_hint}")
    return " ".join(parts)


def _run_file(conn: psycopg.Connection[TupleRow], path: Path, label: str, kind: str) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        with conn.transaction():
            conn.execute(text.encode())  # simple query protocol: several statements per file
    except psycopg.Error as error:
        raise MigrationError(label, _describe(error, text), kind) from None


def apply_platform(conn: psycopg.Connection[TupleRow], platform_dir: Path) -> list[str]:
    """Run every `sql/platform/*.sql` (idempotent stand-ins for the Supabase platform)."""
    files = sorted(platform_dir.glob("*.sql"))
    for path in files:
        _run_file(conn, path, f"sql/platform/{path.name}", "platform SQL")
    return [p.name for p in files]


def applied_versions(conn: psycopg.Connection[TupleRow]) -> set[str]:
    """Versions recorded in the migration history (empty when the history table is missing)."""
    exists = conn.execute(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(r[0]) for r in rows}


def apply_migrations(conn: psycopg.Connection[TupleRow], migrations_dir: Path) -> list[Migration]:
    """Apply, in order, each migration not yet recorded; each in its own transaction.

    A failing migration is rolled back together with its history row, so it is retried on the
    next run; the ones before it stay applied and recorded.
    """
    migrations = discover(migrations_dir)
    conn.execute(sql.SQL("select pg_advisory_lock({})").format(MIGRATE_LOCK_KEY))
    try:
        conn.execute(_HISTORY_DDL.encode())
        done = applied_versions(conn)
        applied: list[Migration] = []
        for migration in migrations:
            if migration.version in done:
                continue
            text = migration.path.read_text(encoding="utf-8")
            try:
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, name, statements) values (%s, %s, %s)",
                        (migration.version, migration.name, [text]),
                    )
            except psycopg.Error as error:
                raise MigrationError(migration.path.name, _describe(error, text)) from None
            applied.append(migration)
        return applied
    finally:
        conn.execute(sql.SQL("select pg_advisory_unlock({})").format(MIGRATE_LOCK_KEY))


def apply_seed(conn: psycopg.Connection[TupleRow], seed_file: Path) -> bool:
    """Load `supabase/seed.sql` if it exists; returns whether it did."""
    if not seed_file.is_file():
        return False
    _run_file(conn, seed_file, f"supabase/{seed_file.name}", "seed")
    return True


def connect(database_url: str) -> psycopg.Connection[TupleRow]:
    """An autocommit connection (each file runs in an explicit transaction of its own)."""
    try:
        conn: psycopg.Connection[TupleRow] = psycopg.connect(
            database_url, autocommit=True, connect_timeout=10
        )
    except psycopg.OperationalError as error:
        raise CallPanionError(f"cannot connect to the database: {str(error).strip()}") from None
    conn.execute("set client_min_messages = warning")
    conn.add_notice_handler(_print_warning)
    return conn


def _print_warning(diag: psycopg.errors.Diagnostic) -> None:
    """Show the database's warnings (e.g. "pg_cron does not run in database …") to the user."""
    if diag.severity_nonlocalized == "WARNING":
        hint = f" (hint: {diag.message_hint})" if diag.message_hint else ""
        print(f"warning: {diag.message_primary}{hint}", file=sys.stderr)


def migrate(database_url: str, migrations_dir: Path, platform_dir: Path | None) -> list[Migration]:
    """`callpanion migrate`: optionally the platform stand-ins, then pending migrations."""
    with connect(database_url) as conn:
        if platform_dir is not None:
            apply_platform(conn, platform_dir)
        return apply_migrations(conn, migrations_dir)
