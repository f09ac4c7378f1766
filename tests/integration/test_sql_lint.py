"""plpgsql_check over every function of the migrations (what `make lint` runs)."""

from __future__ import annotations

import psycopg

from python_worker.stack.cluster import LocalStack
from python_worker.stack.sql_lint import check_functions


def test_every_function_is_clean_with_and_without_pg_cron(pg_stack: LocalStack) -> None:
    findings = check_functions(pg_stack.admin_conninfo(), "with pg_cron")
    with pg_stack.scratch_database("lint") as url:
        findings += check_functions(pg_stack.admin_conninfo(url.rsplit("/", 1)[1]), "without")
    assert [f.describe() for f in findings] == []


def test_the_check_reports_what_is_wrong_in_a_function(pg_stack: LocalStack) -> None:
    """Not vacuous: a broken function, and a trigger reading its transition table (clean)."""
    with pg_stack.scratch_database("lint_bad") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                """
                create function private.broken() returns integer language plpgsql as $$
                begin return (select count(*) from public.no_such_table); end $$;
                create function private.count_inserted() returns trigger language plpgsql as $$
                begin perform count(*) from inserted; return null; end $$;
                create trigger households_counted after insert on public.households
                  referencing new table as inserted
                  for each statement execute function private.count_inserted();
                """
            )
        findings = check_functions(pg_stack.admin_conninfo(url.rsplit("/", 1)[1]), "scratch")
    assert [(f.function, f.level, f.message) for f in findings] == [
        ("private.broken()", "error", 'relation "public.no_such_table" does not exist')
    ]
