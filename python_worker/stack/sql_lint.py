"""`callpanion lint-sql`: plpgsql_check over every PL/pgSQL function the migrations create.

The migrations are applied to a throw-away cluster (as `postgres`, like the local stack), once in
pg_cron's database and once in a database without pg_cron, so a function is checked in both
worlds it must run in. Trigger functions are checked against every table they are attached to,
with the transition tables (REFERENCING NEW/OLD TABLE) those triggers declare.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from python_worker.stack.cluster import throwaway_stack
from python_worker.stack.settings import StackSettings

#: The schemas our migrations put functions in (`auth` belongs to the platform stand-ins).
LINT_SCHEMAS = ("public", "private")

_CHECK = """
with fns as (
  select p.oid, p.oid::regprocedure::text as function,
         p.prorettype = 'pg_catalog.trigger'::regtype as is_trigger
  from pg_catalog.pg_proc p
  join pg_catalog.pg_language l on l.oid = p.prolang
  where l.lanname = 'plpgsql'
    and p.pronamespace = any (%(schemas)s::regnamespace[])
    and p.prorettype <> 'pg_catalog.event_trigger'::regtype
),
targets as (
  select f.oid, f.function, 0::oid as relid, null::name as oldtable, null::name as newtable
  from fns f where not f.is_trigger
  union all
  select distinct f.oid, f.function, t.tgrelid, t.tgoldtable, t.tgnewtable
  from fns f join pg_catalog.pg_trigger t on t.tgfoid = f.oid
  where f.is_trigger
)
select t.function, t.relid::regclass::text as on_table, r.level, r.sqlstate, r.message,
       r.lineno, r.statement, r.query, r.detail, r.hint
from targets t
cross join lateral plpgsql_check.plpgsql_check_function_tb(
  t.oid, t.relid,
  fatal_errors => false, other_warnings => true, extra_warnings => true,
  performance_warnings => false, security_warnings => false,
  oldtable => t.oldtable, newtable => t.newtable) r
order by t.function, r.lineno
"""


@dataclass(frozen=True)
class Finding:
    """One plpgsql_check result."""

    database: str
    function: str
    on_table: str | None
    level: str
    sqlstate: str
    message: str
    lineno: int | None
    statement: str | None
    query: str | None

    def describe(self) -> str:
        """One line: where, what level, what."""
        where = self.function if self.lineno is None else f"{self.function} line {self.lineno}"
        if self.on_table and self.on_table != "-":
            where += f" (trigger on {self.on_table})"
        text = f"{self.database}: {where}: {self.level} {self.sqlstate}: {self.message}"
        if self.query:
            text += f" [{' '.join(self.query.split())[:160]}]"
        return text


def check_functions(
    conninfo: str, label: str, schemas: tuple[str, ...] = LINT_SCHEMAS
) -> list[Finding]:
    """Run plpgsql_check over the PL/pgSQL functions of `schemas` in one database. Needs a
    superuser connection. The extension lives in a schema of its own for the length of the
    check and is dropped afterwards, so the checked schemas (and the types generated from
    them) never see it."""
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set client_min_messages = warning")
        conn.execute(
            "create schema if not exists plpgsql_check;"
            " create extension if not exists plpgsql_check with schema plpgsql_check"
        )
        try:
            rows = conn.execute(_CHECK, {"schemas": list(schemas)}).fetchall()
        finally:
            conn.execute("drop extension plpgsql_check; drop schema plpgsql_check")
    return [
        Finding(
            database=label,
            function=str(r["function"]),
            on_table=None if r["on_table"] in (None, "-") else str(r["on_table"]),
            level=str(r["level"]),
            sqlstate=str(r["sqlstate"]),
            message=str(r["message"]),
            lineno=None if r["lineno"] is None else int(r["lineno"]),
            statement=None if r["statement"] is None else str(r["statement"]),
            query=None if r["query"] is None else str(r["query"]),
        )
        for r in rows
    ]


def lint_migrations(settings: StackSettings) -> list[Finding]:
    """Apply every migration to a throw-away cluster and check every function, with and
    without pg_cron."""
    with throwaway_stack(settings, "lint") as stack:
        stack.up()
        findings = check_functions(stack.admin_conninfo(), "with pg_cron")
        url = stack.create_migrated_database("lint_no_cron")
        name = url.rsplit("/", 1)[1]
        findings += check_functions(stack.admin_conninfo(name), "without pg_cron")
    return findings
