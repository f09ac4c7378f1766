"""The answers of the record functions are exactly the worker's `RecordResult` type.

`record_push_results` and `record_cancel_results` end with one `case` that names each answer:
string literals, and the row's own status for what no branch names. Read from the migrated
database (the functions' current bodies and the status check constraints), so a new status
or a new literal fails here before the worker meets a value it cannot parse.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from python_worker.worker.db import RecordResult

#: The record functions, and the table whose status the `else` branch answers.
FUNCTIONS = {
    "public.record_push_results": "public.notification_queue",
    "public.record_cancel_results": "private.cancel_notices",
}


def function_answers(conn: psycopg.Connection[tuple[object, ...]], function: str) -> set[str]:
    """Every value the function's final `case` can answer."""
    schema, name = function.split(".")
    [(body,)] = conn.execute(
        "select pg_get_functiondef(p.oid) from pg_proc p join pg_namespace n"
        " on n.oid = p.pronamespace where n.nspname = %s and p.proname = %s",
        [schema, name],
    ).fetchall()
    assert isinstance(body, str)
    answer = re.search(r"return query\s+select .*?(case when not .*? end)\s+from", body, re.S)
    assert answer, f"{function}: no final `case` found; update this test's reading of it"
    case = answer.group(1)
    literals = set(re.findall(r"then '([a-z_]+)'", case))
    otherwise = re.search(r"else (\w+)\.status end", case)
    assert otherwise, f"{function}: the `case` no longer ends with `else <row>.status`"
    # A status with a branch of its own (`when q.status = 'due' then ...`) never reaches else.
    alias = otherwise.group(1)
    named = set(re.findall(rf"when {alias}\.status = '([a-z_]+)' then", case))
    return literals | (statuses(conn, FUNCTIONS[function]) - named)


def statuses(conn: psycopg.Connection[tuple[object, ...]], table: str) -> set[str]:
    """The values the table's status check constraint allows."""
    [(definition,)] = conn.execute(
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = %s::regclass and conname like '%%_status_check'",
        [table],
    ).fetchall()
    allowed = re.search(r"'\{([a-z_,]+)\}'", str(definition))
    assert allowed, f"{table}: status check constraint not understood: {definition}"
    return set(allowed.group(1).split(","))


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_the_sql_answers_only_members_of_record_result(database_url: str, function: str) -> None:
    with psycopg.connect(database_url) as conn:
        answers = function_answers(conn, function)
    assert "lost_lease" in answers  # the reading found the case
    assert answers <= {member.value for member in RecordResult}, answers


def test_every_member_of_record_result_is_an_answer(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        answers = set().union(*(function_answers(conn, f) for f in FUNCTIONS))
    assert {member.value for member in RecordResult} == answers
