"""A statement the database aborts for a deadlock or a serialization failure is run again.

Each named query is one statement in autocommit, so an aborted run changed nothing. A device
event racing the worker's record of the same call can meet it in a lock cycle; the phone must
get its answer, not a 503. A conflict that does not clear is a 503 naming the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from python_worker.api.db import TRANSIENT_ATTEMPTS, ApiDatabase, ApiError


@pytest.fixture
def conflicting(api_database: str) -> Iterator[tuple[ApiDatabase, str]]:
    """A function that fails with the given SQLSTATE for its first N calls (a sequence counts
    them: nextval is not rolled back with the aborted statement)."""
    name = f"flaky_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(api_database, autocommit=True) as conn:
        conn.execute(sql.SQL("create sequence public.{}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                """create function public.{f}(p_fail integer, p_state text) returns bigint
                   language plpgsql as $$
                   declare n bigint := nextval('public.{f}');
                   begin
                     if n <= p_fail then
                       raise exception 'conflict %', n using errcode = p_state;
                     end if;
                     return n;
                   end $$"""
            ).format(f=sql.SQL(name))
        )
        for grant in (
            "grant execute on function public.{f}(integer, text) to service_role",
            "grant usage on sequence public.{f} to service_role",
        ):
            conn.execute(sql.SQL(grant).format(f=sql.SQL(name)))
    database = ApiDatabase(api_database, "service_role", timeout=5.0)
    database.open()
    database._queries["flaky"] = f"select public.{name}(%(fail)s, %(state)s) as n"
    try:
        yield database, name
    finally:
        database.close()
        with psycopg.connect(api_database, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop function public.{}(integer, text)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("drop sequence public.{}").format(sql.Identifier(name)))


@pytest.mark.parametrize("state", ["40P01", "40001"])
def test_a_deadlock_or_serialization_failure_is_run_again(
    conflicting: tuple[ApiDatabase, str], state: str
) -> None:
    database, _ = conflicting
    rows = database.rows("flaky", {"fail": TRANSIENT_ATTEMPTS - 1, "state": state})
    assert rows == [{"n": TRANSIENT_ATTEMPTS}]  # failed twice, answered on the last run


def test_a_conflict_that_does_not_clear_is_a_503_naming_the_database(
    conflicting: tuple[ApiDatabase, str],
) -> None:
    database, _ = conflicting
    with pytest.raises(ApiError) as caught:
        database.rows("flaky", {"fail": TRANSIENT_ATTEMPTS, "state": "40P01"})
    assert (caught.value.status, caught.value.field) == (503, "database")
    # Exactly TRANSIENT_ATTEMPTS runs: the next one succeeds with the following number.
    assert database.rows("flaky", {"fail": 0, "state": "40P01"}) == [{"n": TRANSIENT_ATTEMPTS + 1}]


def test_other_failures_are_not_run_again(conflicting: tuple[ApiDatabase, str]) -> None:
    database, _ = conflicting
    with pytest.raises(ApiError) as caught:
        database.rows("flaky", {"fail": 1, "state": "CP409"})
    assert caught.value.status == 409
    assert database.rows("flaky", {"fail": 0, "state": "CP409"}) == [{"n": 2}]
