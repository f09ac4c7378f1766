"""A stand-in for Supabase Realtime's `postgres_changes`, fed by real inserts.

Supabase Realtime cannot run here, so tests talk to this instead, over a real websocket and
in the protocol the official clients speak:

- `GET /realtime/v1/websocket?apikey=<key>&vsn=1.0.0` (or the key in `x-api-key`). A wrong
  key is refused at the handshake with 403, as Realtime's socket refuses a key it cannot
  verify; the client sees the upgrade fail. Only `vsn=1.0.0` is spoken: Phoenix v1 JSON
  frames, `{"topic", "event", "payload", "ref"}`.
- `phx_join` on `realtime:<name>` with `payload.config.postgres_changes` = [{event, schema,
  table, filter?}]: `phx_reply` ok with `response.postgres_changes` = the same entries, each
  with an integer `id` (the client matches its bindings by position, then routes changes by
  these ids), then the `system` frame "Subscribed to PostgreSQL" (extension
  `postgres_changes`), or a `system` error when a table is not in the publication, with
  Realtime's own wording. An `access_token` in the join must be the key (error reply
  otherwise).
- `heartbeat` on `phoenix`, `phx_leave` and `access_token` are answered as Realtime does;
  any other frame to a topic that was not joined gets `phx_reply` error "unmatched topic".
- Changes: an AFTER INSERT trigger (in a schema of the stand-in's own, dropped on stop)
  sends each new row with pg_notify; the stand-in LISTENs and sends every joined channel
  with a matching binding a `postgres_changes` frame shaped as Realtime's: `{"ids": [...],
  "data": {"schema", "table", "commit_timestamp", "type": "INSERT", "columns", "record",
  "errors": null}}`. (supabase-js renames these to eventType/new/old for its callers; the
  wire, and the Python client, use `type` and `record`.)

Left out: JWT verification (the key is compared as a string), RLS per subscriber,
UPDATE/DELETE, filters other than `eq`, broadcast and presence.

`realtime_standin(database_url, service_key)` runs one in a background thread with its own
event loop and stops it afterwards; `StandIn` has the controls tests need (drop every socket,
stop and restart on the same port) and counters to wait on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import secrets
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("tests.support.realtime_standin")

PATH = "/realtime/v1/websocket"
VSN = "1.0.0"
PUBLICATION = "supabase_realtime"
T = TypeVar("T")
Json = dict[str, Any]


@dataclass(frozen=True)
class Counts:
    """What the stand-in has seen so far (a snapshot)."""

    connections: int = 0  # websockets accepted
    refused: int = 0  # handshakes refused: wrong key, path or vsn
    disconnects: int = 0  # accepted websockets that have ended, whoever ended them
    close_codes: tuple[int | None, ...] = ()  # one per disconnect: 1000 client closed, 1006 lost
    joins: int = 0  # joins answered ok
    join_errors: int = 0  # joins answered with an error
    subscribe_errors: int = 0  # `system` errors: a table outside the publication
    leaves: int = 0
    changes: int = 0  # inserts announced by the database
    deliveries: int = 0  # postgres_changes frames sent

    @property
    def open(self) -> int:
        return self.connections - self.disconnects


@dataclass(frozen=True)
class Binding:
    """One `postgres_changes` entry of a join, with the id the stand-in gave it."""

    id: int
    event: str
    schema: str
    table: str
    filter: tuple[str, str] | None  # (column, value) of an `eq` filter
    params: Json

    def matches(self, change: Mapping[str, Any]) -> bool:
        if self.event not in ("*", change["type"]):
            return False
        if self.schema not in ("*", change["schema"]) or self.table not in ("*", change["table"]):
            return False
        if self.filter is None:
            return True
        column, value = self.filter
        record = change.get("record") or {}
        return column in record and _text(record[column]) == value


def _text(value: object) -> str:
    """A JSON value as Postgres would print it, for comparing with a filter's value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def parse_binding(params: object) -> Binding | str:
    """A binding from a join's entry, or the reason it is refused."""
    if not isinstance(params, dict):
        return f"No subscription params provided: {params!r}"
    event = str(params.get("event", "*")).upper()
    event = event if event in ("INSERT", "UPDATE", "DELETE") else "*"
    schema, table = params.get("schema", "public"), params.get("table", "*")
    if not isinstance(schema, str) or not isinstance(table, str):
        return f"No subscription params provided: {params!r}"
    condition: tuple[str, str] | None = None
    raw_filter = params.get("filter")
    if isinstance(raw_filter, str) and raw_filter.strip():
        column, _, rest = raw_filter.partition("=")
        op, _, value = rest.partition(".")
        if not column or op != "eq":
            return f"Error parsing `filter` params (this stand-in knows only eq): {raw_filter!r}"
        condition = (column, value)
    # Realtime's id is a hash of the params; the client ignores a binding whose id is 0.
    ident = zlib.crc32(json.dumps(params, sort_keys=True).encode()) or 1
    return Binding(ident, event, schema, table, condition, params)


@dataclass(eq=False)  # held in a set, by identity
class _Session:
    """One websocket and the channels joined on it (topic -> bindings)."""

    ws: ServerConnection
    channels: dict[str, list[Binding]] = field(default_factory=dict)


class RealtimeStandIn:
    """The stand-in itself, on the event loop that starts it."""

    def __init__(
        self,
        database_url: str,
        service_key: str,
        *,
        tables: Sequence[str] = ("public.notification_queue",),
        publication: str = PUBLICATION,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.database_url = database_url
        self.service_key = service_key
        self.tables = tuple(tables)
        self.publication = publication
        self.host = host
        self.port = port
        # Its own schema and NOTIFY channel, so two stand-ins on one database do not meet.
        self.name = f"realtime_standin_{secrets.token_hex(4)}"
        self.changed = threading.Condition()
        self._counts = Counts()
        self._sessions: set[_Session] = set()
        self._server: Server | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._query_conn: psycopg.AsyncConnection[Any] | None = None
        self._query_lock = asyncio.Lock()
        self._columns: dict[tuple[str, str], list[Json]] = {}

    # Counters ---------------------------------------------------------------------------

    @property
    def counts(self) -> Counts:
        with self.changed:
            return self._counts

    def _count(self, **deltas: int) -> None:
        with self.changed:
            values = {name: getattr(self._counts, name) + n for name, n in deltas.items()}
            self._counts = replace(self._counts, **values)
            self.changed.notify_all()

    def _disconnected(self, close_code: int | None) -> None:
        with self.changed:
            codes = (*self._counts.close_codes, close_code)
            self._counts = replace(
                self._counts, disconnects=self._counts.disconnects + 1, close_codes=codes
            )
            self.changed.notify_all()

    # Lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Install the trigger, LISTEN, and serve websockets."""
        self._query_conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        await self._install()
        self._listen_conn = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        )
        await self._listen_conn.execute(sql.SQL("listen {}").format(sql.Identifier(self.name)))
        self._listener = asyncio.create_task(self._listen(self._listen_conn))
        await self.start_server()

    async def start_server(self) -> None:
        """Serve websockets (again), on the same port as before once one was chosen."""
        assert self._server is None, "already serving"
        self._server = await serve(
            self._session,
            self.host,
            self.port,
            process_request=self._check_request,
            ping_interval=None,  # Phoenix leaves liveness to the client's heartbeats
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop_server(self) -> None:
        """Stop serving: open sockets are closed (1001, going away) and new ones refused."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        await server.wait_closed()

    def drop_sockets(self) -> int:
        """Cut every open socket without a closing handshake (a network blip); how many."""
        sessions = list(self._sessions)
        for session in sessions:
            session.ws.transport.abort()
        return len(sessions)

    async def stop(self) -> None:
        """Stop serving and listening, and remove the trigger."""
        await self.stop_server()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._listen_conn is not None:
            await self._listen_conn.close()
        if self._query_conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._query_conn.execute(
                    sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(self.name))
                )
            await self._query_conn.close()

    # The database side -------------------------------------------------------------------

    async def _install(self) -> None:
        schema = sql.Identifier(self.name)
        statements = [
            sql.SQL("create schema {}").format(schema),
            sql.SQL(
                """create function {}.announce() returns trigger
                   language plpgsql security definer set search_path = '' as $$
                   begin
                     perform pg_notify(tg_argv[0], json_build_object(
                       'schema', tg_table_schema,
                       'table', tg_table_name,
                       'type', tg_op,
                       'commit_timestamp',
                         to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                       'record', row_to_json(new))::text);
                     return null;
                   end
                   $$"""
            ).format(schema),
        ]
        for table in self.tables:
            table_schema, _, table_name = table.rpartition(".")
            statements.append(
                sql.SQL(
                    "create trigger {} after insert on {}.{} for each row"
                    " execute function {}.announce({})"
                ).format(
                    sql.Identifier(self.name),
                    sql.Identifier(table_schema or "public"),
                    sql.Identifier(table_name),
                    schema,
                    sql.Literal(self.name),
                )
            )
        async with self._query() as conn, conn.transaction():
            for statement in statements:
                await conn.execute(statement)

    @contextlib.asynccontextmanager
    async def _query(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        assert self._query_conn is not None
        async with self._query_lock:
            yield self._query_conn

    async def _published(self, binding: Binding) -> bool:
        """Whether the publication has a table the binding names (Realtime's own test)."""
        async with self._query() as conn:
            cursor = await conn.execute(
                """select exists (
                     select 1 from pg_publication_tables
                     where pubname = %s
                       and schemaname like (case %s when '*' then '%%' else %s end)
                       and tablename like (case %s when '*' then '%%' else %s end))""",
                [self.publication, binding.schema, binding.schema, binding.table, binding.table],
            )
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def _table_columns(self, schema: str, table: str) -> list[Json]:
        key = (schema, table)
        if key not in self._columns:
            async with self._query() as conn:
                cursor = await conn.execute(
                    """select a.attname, t.typname
                         from pg_attribute a join pg_type t on t.oid = a.atttypid
                        where a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass
                          and a.attnum > 0 and not a.attisdropped
                        order by a.attnum""",
                    [schema, table],
                )
                rows = await cursor.fetchall()
            self._columns[key] = [{"name": name, "type": kind} for name, kind in rows]
        return self._columns[key]

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await self._relay(conn)
        except Exception:
            log.exception("stand-in: relaying changes failed; no more will be sent")
            raise

    async def _relay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for notice in conn.notifies():
            change = json.loads(notice.payload)
            self._count(changes=1)
            data = {
                "schema": change["schema"],
                "table": change["table"],
                "commit_timestamp": change["commit_timestamp"],
                "type": change["type"],
                "columns": await self._table_columns(change["schema"], change["table"]),
                "record": change["record"],
                "errors": None,
            }
            for session in list(self._sessions):
                for topic, bindings in list(session.channels.items()):
                    ids = [b.id for b in bindings if b.matches(change)]
                    if ids:
                        frame = _frame(topic, "postgres_changes", {"ids": ids, "data": data})
                        if await _send(session, frame):
                            self._count(deliveries=1)

    # The websocket side ------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        key = request.headers.get("x-api-key") or query.get("apikey")
        refusal: tuple[HTTPStatus, str] | None = None
        if url.path.rstrip("/") != PATH:
            refusal = (HTTPStatus.NOT_FOUND, "Not Found\n")
        elif key != self.service_key:
            refusal = (HTTPStatus.FORBIDDEN, "Forbidden\n")
        elif query.get("vsn", VSN) != VSN:
            refusal = (HTTPStatus.BAD_REQUEST, f"unsupported vsn (this stand-in speaks {VSN})\n")
        if refusal is None:
            return None
        self._count(refused=1)
        return connection.respond(*refusal)

    async def _session(self, ws: ServerConnection) -> None:
        session = _Session(ws)
        self._sessions.add(session)
        self._count(connections=1)
        try:
            async for raw in ws:
                await self._handle(session, raw)
        except ConnectionClosed:
            pass
        finally:
            self._sessions.discard(session)
            self._disconnected(_close_code(ws))

    async def _handle(self, session: _Session, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("stand-in: a frame that is not JSON", extra={"frame": raw[:200]})
            return
        if not isinstance(message, dict):
            return
        topic, event, ref = message.get("topic"), message.get("event"), message.get("ref")
        raw_payload = message.get("payload")
        payload: Json = raw_payload if isinstance(raw_payload, dict) else {}
        if not isinstance(topic, str):
            return
        if topic == "phoenix" and event == "heartbeat":
            await _send(session, _reply(topic, ref, "ok", {}))
        elif event == "phx_join":
            await self._join(session, topic, payload, ref)
        elif topic not in session.channels:
            await _send(session, _reply(topic, ref, "error", {"reason": "unmatched topic"}))
        elif event == "phx_leave":
            del session.channels[topic]
            self._count(leaves=1)
            await _send(session, _reply(topic, ref, "ok", {}))
        elif event == "access_token":
            token = payload.get("access_token")
            if token is not None and token != self.service_key:
                # Realtime shuts the channel down: a system error, then the channel closes.
                del session.channels[topic]
                await _send(session, _system(topic, "system", "error", "Invalid token"))
                await _send(session, _frame(topic, "phx_close", {}))
        # broadcast and presence frames are not simulated: ignored

    async def _join(self, session: _Session, topic: str, payload: Json, ref: object) -> None:
        name = topic.removeprefix("realtime:")
        token = payload.get("access_token")
        reason: str | None = None
        if not topic.startswith("realtime:") or not name:
            reason = "TopicNameRequired: You must provide a topic name"
        elif token is not None and token != self.service_key:
            reason = "InvalidJWTToken: the access token is not the service key"
        raw_config = payload.get("config")
        config: Json = raw_config if isinstance(raw_config, dict) else {}
        bindings: list[Binding] = []
        for params in config.get("postgres_changes") or []:
            parsed = parse_binding(params)
            if isinstance(parsed, str):
                reason = reason or parsed
            else:
                bindings.append(parsed)
        if reason is not None:
            self._count(join_errors=1)
            await _send(session, _reply(topic, ref, "error", {"reason": reason}))
            return
        session.channels[topic] = bindings
        self._count(joins=1)
        response = {"postgres_changes": [{**b.params, "id": b.id} for b in bindings]}
        await _send(session, _reply(topic, ref, "ok", response))
        if not bindings:
            return
        unpublished = [b for b in bindings if not await self._published(b)]
        if unpublished:
            self._count(subscribe_errors=1)
            described = "; ".join(
                f"event: {b.event}, schema: {b.schema}, table: {b.table}, filters: "
                f"{[b.filter] if b.filter else []}"
                for b in unpublished
            )
            message = (
                "Unable to subscribe to changes with given parameters. Please check Realtime"
                f" is enabled for the given connect parameters: [{described}]"
            )
            await _send(session, _system(topic, "postgres_changes", "error", message))
        else:
            await _send(
                session, _system(topic, "postgres_changes", "ok", "Subscribed to PostgreSQL")
            )


def _frame(topic: str, event: str, payload: Json, ref: object = None) -> Json:
    return {"topic": topic, "event": event, "payload": payload, "ref": ref}


def _reply(topic: str, ref: object, status: str, response: Json) -> Json:
    return _frame(topic, "phx_reply", {"status": status, "response": response}, ref)


def _system(topic: str, extension: str, status: str, message: str) -> Json:
    channel = topic.removeprefix("realtime:")
    payload = {"channel": channel, "extension": extension, "status": status, "message": message}
    return _frame(topic, "system", payload)


async def _send(session: _Session, frame: Json) -> bool:
    try:
        await session.ws.send(json.dumps(frame))
    except ConnectionClosed:
        return False
    return True


def _close_code(ws: ServerConnection) -> int | None:
    code = ws.close_code
    return None if code is None else int(code)


class StandIn:
    """A RealtimeStandIn on its own event loop in a background thread, driven from tests.

    The controls block until done; from async code call them through `asyncio.to_thread`,
    so the client on the caller's loop can answer the closing handshakes meanwhile.
    """

    def __init__(self, database_url: str, service_key: str, **options: Any) -> None:
        self.core = RealtimeStandIn(database_url, service_key, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="realtime-standin", daemon=True
        )

    @property
    def url(self) -> str:
        """The project URL to give a client: Realtime is at `<url>/realtime/v1`."""
        return f"http://{self.core.host}:{self.core.port}"

    @property
    def counts(self) -> Counts:
        return self.core.counts

    def start(self) -> None:
        self._thread.start()
        self._run(self.core.start())

    def drop_sockets(self) -> int:
        """Cut every open socket without a closing handshake (a network blip)."""

        async def drop() -> int:
            return self.core.drop_sockets()

        return self._run(drop())

    def stop_server(self) -> None:
        """A Realtime outage: close every socket (1001) and refuse connections."""
        self._run(self.core.stop_server())

    def restart_server(self) -> None:
        """The end of the outage: serve again on the same port."""
        self._run(self.core.start_server())

    def wait_for(self, predicate: Callable[[Counts], bool], timeout: float = 10.0) -> Counts:
        """Block until `predicate(counts)` holds; the counts then. AssertionError on timeout."""
        with self.core.changed:
            if not self.core.changed.wait_for(lambda: predicate(self.core.counts), timeout):
                raise AssertionError(f"stand-in: condition not met in {timeout}s: {self.counts}")
            return self.core.counts

    def stop(self) -> None:
        try:
            self._run(self.core.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout=30)


@contextmanager
def realtime_standin(database_url: str, service_key: str, **options: Any) -> Iterator[StandIn]:
    """A Realtime stand-in fed by inserts into `database_url`, stopped (and its trigger
    dropped) on exit. Options: `tables` (default public.notification_queue), `publication`."""
    standin = StandIn(database_url, service_key, **options)
    try:
        standin.start()
        yield standin
    finally:
        standin.stop()
