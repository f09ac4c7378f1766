"""The HTTP API's database boundary: a connection pool and the named queries of queries.sql.

Every statement runs on its own in autocommit mode, so each SQL function call is one
transaction and no transaction is ever held across a network call. Refusals raised by the
SQL functions become `ApiError`s carrying the HTTP status and the database's message, which
names the field and the reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from python_worker.named_queries import load_queries

QUERIES_FILE = Path(__file__).with_name("queries.sql")
#: Runs of one named query when the database aborts it for a deadlock or a serialization
#: failure (a conflict with a concurrent transaction, not a refusal).
TRANSIENT_ATTEMPTS = 3
log = logging.getLogger("callpanion.api")

#: SQLSTATEs the API's SQL functions raise on purpose, and what the client gets.
STATUS_BY_SQLSTATE = {
    "P0002": 404,  # no_data_found: not found, or not yours (existence is not leaked)
    "CP401": 401,  # the device is not paired or was revoked
    "CP409": 409,  # illegal transition / conflict, naming the current state
    "CP410": 410,  # the call is over
    "CP422": 422,  # invalid input, naming the field
    "22023": 422,  # invalid_parameter_value: a bad argument, naming it
    "23514": 422,  # check_violation from a table constraint (private.reject_value)
    "23505": 409,  # unique_violation
    "22P02": 422,  # invalid_text_representation
    "22001": 422,  # string_data_right_truncation
    "22003": 422,  # numeric_value_out_of_range
    "22007": 422,  # invalid_datetime_format
    "22008": 422,  # datetime_field_overflow
}
_FIELD = re.compile(r"^invalid (?:length of )?(?:[a-z_]+\.)?([a-z_][a-z_.]*):")
#: The field a refusal without "invalid <field>:" is about, by what its message starts with.
_FIELD_BY_SUBJECT = (
    ("call session", "session_id"),
    ("event ", "event"),
    ("relative ", "relative_id"),
    ("device", "authorization"),
    ("alert ", "alert_id"),
    ("webhook event", "event_id"),
)
#: Unique constraints a client can run into, as the field and the reason it is told. Postgres'
#: own text ("duplicate key value violates unique constraint …") names internals.
_UNIQUE = {
    "call_sessions_conversation_idx": ("conversation_id", "already belongs to another call"),
}
_KEY_COLUMN = re.compile(r"^Key \(([a-z_]+)(?:,[^)]*)?\)=")


@dataclass
class ApiError(Exception):
    """A refusal for the client: HTTP status, a message naming field and reason, the field."""

    status: int
    message: str
    field: str | None = None
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.message


def refusal(error: psycopg.Error) -> ApiError | None:
    """The ApiError for a deliberate refusal by the database, or None for anything else.

    The message is the SQL function's own (it names the field and the reason); a refusal by
    Postgres itself (a unique or type violation) is told as the field and a reason, never
    with the constraint's or the type's name.
    """
    status = STATUS_BY_SQLSTATE.get(error.sqlstate or "")
    if status is None:
        return None
    if error.sqlstate == "23505":
        return _unique_violation(error)
    message = error.diag.message_primary or str(error)
    if error.sqlstate in _POSTGRES_OWN:
        return ApiError(422, f"value: {_POSTGRES_OWN[error.sqlstate]}", "value")
    match = _FIELD.match(message)
    if match:
        return ApiError(status, message, match.group(1))
    field = next((f for start, f in _FIELD_BY_SUBJECT if message.startswith(start)), None)
    return ApiError(status, message, field)


#: Type errors Postgres raises itself (not through a function's message): the reason only.
_POSTGRES_OWN = {
    "22P02": "is not valid for its type",
    "22001": "is too long",
    "22003": "is out of range",
    "22007": "is not a valid date or time",
    "22008": "is out of range for a date or time",
}


def _unique_violation(error: psycopg.Error) -> ApiError:
    known = _UNIQUE.get(error.diag.constraint_name or "")
    if known is not None:
        return ApiError(409, f"{known[0]}: {known[1]}", known[0])
    match = _KEY_COLUMN.match(error.diag.message_detail or "")
    field = match.group(1) if match else "body"
    return ApiError(409, f"{field}: already exists", field)


class ApiDatabase:
    """A small pool of connections acting as the API's role (default `service_role`)."""

    def __init__(self, url: str, role: str | None, max_size: int = 8, timeout: float = 5.0) -> None:
        self._queries = load_queries(QUERIES_FILE)
        self._role = role
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout,
            # No server-side prepared statements: each call is one short statement, and
            # Supavisor's transaction mode (port 6543) does not support them.
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": 5,
                "prepare_threshold": None,
            },
            connection_class=psycopg.Connection[dict[str, Any]],
            configure=self._configure,
        )

    def _configure(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        if self._role:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(self._role)))

    def open(self) -> None:
        # Without waiting: the API starts even while the database is away (healthz says so).
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    def rows(
        self, name: str, params: dict[str, Any], wait: float | None = None
    ) -> list[dict[str, Any]]:
        """Run a named query; database refusals become ApiError, an absent database 503
        (after waiting up to `wait` seconds, default the pool's, for a connection)."""
        query = self._queries[name]
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return self._once(query, params, wait)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as error:
                # Each named query is one statement in autocommit: the aborted transaction
                # changed nothing, so running it again is safe. A device event racing the
                # worker's record of the same call can meet it in a lock cycle.
                log.warning(
                    "transient database conflict",
                    extra={"query": name, "sqlstate": error.sqlstate, "attempt": attempt},
                )
        raise ApiError(503, "database: busy; try again shortly", "database")

    def _once(self, query: str, params: dict[str, Any], wait: float | None) -> list[dict[str, Any]]:
        try:
            with self._pool.connection(timeout=wait) as conn:
                return conn.execute(query, params).fetchall()
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise
        except psycopg.errors.InvalidAuthorizationSpecification:
            # SQLSTATE 28000 is an OperationalError to psycopg, but here it is a refusal by a
            # SQL function (a forged, expired or used link token), not an absent database.
            raise
        except (PoolTimeout, psycopg.OperationalError) as error:
            log.warning("database unavailable", extra={"error": str(error)[:300]})
            raise ApiError(503, "database: unavailable; try again shortly", "database") from None
        except UnicodeEncodeError:
            raise ApiError(
                422, "invalid text: contains an unpaired UTF-16 surrogate", "text"
            ) from None
        except psycopg.Error as error:
            if error.sqlstate is None and isinstance(error, psycopg.DataError):
                # Refused by psycopg before sending: a NUL character in a text value (said
                # in our words, not the driver's).
                raise ApiError(422, "invalid text: contains a NUL character", "text") from None
            mapped = refusal(error)
            if mapped is None:
                raise
            raise mapped from None

    def result(self, name: str, params: dict[str, Any]) -> Any:
        """The `result` column of a named query that returns one row."""
        return self.rows(name, params)[0]["result"]
