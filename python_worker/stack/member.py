"""Acting as a household member on a local database, as PostgREST does for a dashboard request.

PostgREST runs each request as the `authenticated` role with the user's JWT claims in
`request.jwt.claims`; `auth.uid()` reads `sub` from there. Row Level Security then applies
exactly as it does for the dashboard. `callpanion sql --as <email>` and the demo use this.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from python_worker.errors import CallPanionError
from python_worker.named_queries import load_queries

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def member_claims(conn: psycopg.Connection[Any], who: str) -> dict[str, str]:
    """The JWT claims of a user named by email or id (looked up in `auth.users`)."""
    cursor = conn.cursor(row_factory=tuple_row)  # whatever rows the caller's connection makes
    try:
        user = cursor.execute(_QUERIES["user_by_id"], {"id": uuid.UUID(who)}).fetchone()
    except ValueError:
        user = cursor.execute(_QUERIES["user_by_email"], {"email": who}).fetchone()
    if user is None:
        raise CallPanionError(
            f"--as: no user {who!r} in auth.users (the seed has alice@example.com)"
        )
    return {"sub": str(user[0]), "role": "authenticated", "email": str(user[1] or "")}


@contextmanager
def acting_as_member(
    conn: psycopg.Connection[Any], claims: dict[str, str]
) -> Iterator[psycopg.Connection[Any]]:
    """One transaction as the `authenticated` role with these claims (committed on success)."""
    with conn.transaction():
        conn.execute(_QUERIES["act_as_authenticated"])
        conn.execute(_QUERIES["set_jwt_claims"], {"claims": json.dumps(claims)})
        yield conn


def psql_options(claims: dict[str, str]) -> str:
    """PGOPTIONS that start a psql session as that member (role and claims for the session)."""
    text = json.dumps(claims, separators=(",", ":"))
    # libpq's options: backslash-escape spaces; the claims JSON has none.
    return f"-c role=authenticated -c request.jwt.claims={text}"


def run_as_member(database_url: str, who: str, statement: str | None) -> None:
    """Run `statement` as that member and print its rows (tab separated) or its status; with
    no statement, replace this process with psql acting as them."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        claims = member_claims(conn, who)
        if statement is None:
            conn.close()
            env = {**os.environ, "PGOPTIONS": psql_options(claims)}
            print(f"psql as {claims['email']} (role authenticated, auth.uid() = {claims['sub']})")
            os.execvpe("psql", ["psql", database_url], env)  # noqa: S606
        with acting_as_member(conn, claims):
            cursor = conn.execute(statement)  # the caller's own SQL, under RLS as the member
            if cursor.description is not None:
                names = [column.name for column in cursor.description]
                print("\t".join(names))
                for row in cursor.fetchall():
                    print("\t".join("" if v is None else str(v) for v in row))
            else:
                print(cursor.statusmessage or "ok")
