"""What must never reach a client in an error body: SQL, driver or framework internals
(issue 25, item 6). Used by every API server the tests start (tests/api_support.ServedApi)."""

from __future__ import annotations

import re

#: Postgres' and psycopg's own wording, constraint and index names, stack traces.
INTERNALS = re.compile(
    r"violates|duplicate key|unique constraint|check constraint|foreign key|syntax for type"
    r"|invalid input syntax|psycopg|sqlstate|relation \"|column \"|does not exist\b.*relation"
    r"|Traceback|File \"|plpgsql|PL/pgSQL|_idx\b|_pkey\b|_fkey\b|ERROR:|DETAIL:|CONTEXT:"
    r"|HINT:|0x00|PostgreSQL|pydantic|RecursionError|JSONDecodeError|ValueError|KeyError",
    re.IGNORECASE,
)


def leaked(body: str) -> str | None:
    """The internal text an error body shows, or None."""
    match = INTERNALS.search(body)
    return match.group(0) if match else None
