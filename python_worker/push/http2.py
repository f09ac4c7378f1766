"""A thin asyncio HTTP/2 client on the `h2` protocol library, for the push providers.

Why not httpx: on loopback its HTTP/2 client reached about 0.9k requests/s, while a protocol
written directly on `h2` (the approach aioapns takes) reaches several thousand on the same
server. FCM and APNs both want many concurrent streams on few long-lived connections, which is
exactly what this module does and nothing more:

- TLS with ALPN `h2` only (both providers require it), a configurable CA bundle;
- as many concurrent streams as the server advertises in SETTINGS (APNs starts at 1 and raises
  it after the first authenticated request), queued fairly beyond that;
- outbound flow control (bodies wait for WINDOW_UPDATE) and inbound acknowledgement;
- GOAWAY: streams above the server's last stream id were never processed, so they fail with
  `Unprocessed` and `H2Client` retries them on a new connection; streams at or below it finish;
- connection loss: the rest fail with `ConnectionLost` (delivery unknown: the caller decides);
- writes coalesced into one `transport.write` per event-loop turn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

Header = tuple[bytes, bytes]


def unique(name: bytes, value: bytes) -> Header:
    """A header whose value changes on every request (an id): sent literally, never added to
    the HPACK dynamic table, where it would only evict the headers that do repeat."""
    return hpack.NeverIndexedHeaderTuple(name, value)


# Our own ceiling on streams per connection, whatever the server allows: beyond about a
# thousand the per-connection bookkeeping costs more than opening a second connection.
MAX_STREAMS_PER_CONNECTION = 1000
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 30.0
# Receive window we grant the server, per stream and for the connection (responses are small,
# but a generous window avoids a WINDOW_UPDATE round trip per response under load).
RECEIVE_WINDOW = 1 << 24
# Writes are coalesced per event-loop turn, but a burst encodes hundreds of requests in one
# turn: write every this many, so the server starts on the first while we encode the rest.
FLUSH_EVERY = 100


class H2Error(Exception):
    """Base class of transport failures (no HTTP response was received)."""


class Unprocessed(H2Error):
    """The server certainly did not process the request (GOAWAY above it, REFUSED_STREAM)."""


class ConnectionLost(H2Error):
    """The connection dropped while the request was in flight: it may or may not have arrived."""


class StreamReset(H2Error):
    """The server reset the stream with an error code."""

    def __init__(self, error_code: int) -> None:
        super().__init__(f"stream reset by server (error code {error_code})")
        self.error_code = error_code


class ConnectFailed(H2Error):
    """A connection could not be set up (DNS, TCP, TLS, ALPN)."""


@dataclass(slots=True)
class Response:
    """One HTTP/2 response: status, headers (lowercase names, bytes) and body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes
    # True when the response ended with its HEADERS frame (no DATA frame at all).
    headers_only: bool

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.encode())
        return value.decode("latin-1") if value is not None else None


@dataclass(slots=True)
class _Stream:
    future: asyncio.Future[Response]
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    got_data: bool = False


class CountedH2(h2.connection.H2Connection):
    """h2's connection without its O(streams) recount on every new stream.

    h2 counts open streams by walking every stream it holds each time one is opened, which
    makes a thousand concurrent streams quadratic (it was the largest cost in profiles).
    Here the owner tells it the count (`counter`) and drops finished streams itself with
    `forget`, exactly as h2's own walk would have.
    """

    def __init__(self, config: h2.config.H2Configuration, counter: Callable[[], int]) -> None:
        super().__init__(config=config)
        self._counter = counter

    @property
    def open_outbound_streams(self) -> int:
        return self._counter() if self.config.client_side else super().open_outbound_streams

    @property
    def open_inbound_streams(self) -> int:
        return super().open_inbound_streams if self.config.client_side else self._counter()

    def forget(self, stream_id: int) -> None:
        """Drop a closed stream's state (h2 keeps only why it closed)."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by


class H2Connection(asyncio.Protocol):
    """One client HTTP/2 connection. Use `H2Client` rather than this directly."""

    def __init__(self, authority: bytes, max_streams: int = MAX_STREAMS_PER_CONNECTION) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            # We build our own headers (lowercase, no connection-specific ones): skip the
            # per-request re-validation, which costs more than the rest of a request.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._streams: dict[int, _Stream] = {}
        self._h2 = CountedH2(config, self._streams.__len__)
        self._authority = authority
        self._cap = max_streams
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._window_waiters: list[asyncio.Future[None]] = []
        self._flush_pending = False
        self._unflushed = 0  # requests encoded since the last write
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        # Nobody waits on `ready` once a connect attempt is abandoned: mark its error seen.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed: asyncio.Future[None] = self._loop.create_future()
        # Set once GOAWAY arrived or the connection dropped: take no new streams.
        self.draining = False
        self.requests_started = 0

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None, "not connected"
        return self._transport

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(RECEIVE_WINDOW - 65_535)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._abort(ConnectionLost(f"HTTP/2 protocol error from server: {error}"))
            return
        for event in events:
            self._on_event(event)
        self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.draining = True
        reason = f"connection lost: {exc}" if exc else "connection closed by server"
        self._fail_streams(lambda _sid: ConnectionLost(reason))
        self._wake_all(ConnectionLost(reason))
        if not self.ready.done():
            self.ready.set_exception(ConnectFailed(reason))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                headers = dict(event.headers or ())
                stream.headers = headers
                stream.status = int(headers.get(b":status", b"0"))
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if event.data is not None:
                if stream is not None:
                    stream.chunks.append(event.data)
                    stream.got_data = True
                if event.flow_controlled_length:
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_result(
                    Response(
                        stream.status,
                        stream.headers,
                        b"".join(stream.chunks),
                        headers_only=not stream.got_data,
                    )
                )
            self._h2.forget(event.stream_id)
            self._release_slot()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                code = int(event.error_code) if event.error_code is not None else 0
                error: H2Error = (
                    Unprocessed("server refused the stream")
                    if code == h2.errors.ErrorCodes.REFUSED_STREAM
                    else StreamReset(code)
                )
                stream.future.set_exception(error)
            self._h2.forget(event.stream_id)
            self._release_slot()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.ready.done():
                self.ready.set_result(None)
            self._release_slot()  # the limit may have grown: let waiters re-check
        elif isinstance(event, h2.events.WindowUpdated):
            waiters, self._window_waiters = self._window_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.draining = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            goaway_code = event.error_code
            self._fail_streams(
                lambda sid: Unprocessed(
                    f"GOAWAY ({goaway_code}) before stream {sid} was processed"
                ),
                above=last,
            )
            self._wake_all(Unprocessed("connection is going away"))
            if not self._streams and self._transport is not None:
                self._transport.close()

    # -- streams -----------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        remote = self._h2.remote_settings.max_concurrent_streams
        return max(1, min(self._cap, remote))

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def free_slots(self) -> int:
        return self.limit - len(self._streams) - len(self._waiters)

    async def _acquire_slot(self) -> None:
        while len(self._streams) >= self.limit or self._waiters:
            if self.draining:
                raise Unprocessed("connection is going away")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if len(self._streams) < self.limit:
                return
        if self.draining:
            raise Unprocessed("connection is going away")

    def _release_slot(self) -> None:
        free = self.limit - len(self._streams)
        if free > 0 and self._waiters:
            # Woken waiters stay queued until they run, so they are counted among `free`.
            for waiter in itertools.islice(self._waiters, free):
                if not waiter.done():
                    waiter.set_result(None)
        if self.draining and not self._streams and self._transport is not None:
            self._transport.close()

    def _wake_all(self, error: Exception) -> None:
        for waiter in list(self._waiters) + self._window_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._window_waiters = []

    def _fail_streams(self, make: Callable[[int], H2Error], above: int = 0) -> None:
        for sid in [sid for sid in self._streams if sid > above]:
            stream = self._streams.pop(sid)
            if not stream.future.done():
                stream.future.set_exception(make(sid))

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: Sequence[Header],
        body: bytes = b"",
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        unique_path: bool = False,
    ) -> Response:
        """Send one request on this connection and wait for its response.

        `unique_path`: the path differs on every request (APNs: the device token), so keep it
        out of the HPACK dynamic table instead of churning the table with it.
        """
        await self._acquire_slot()
        h2conn = self._h2
        try:
            stream_id = h2conn.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.draining = True
            raise Unprocessed("connection ran out of stream ids") from None
        future: asyncio.Future[Response] = self._loop.create_future()
        self.requests_started += 1
        all_headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            unique(b":path", path) if unique_path else (b":path", path),
            *headers,
        ]
        if body:
            all_headers.append((b"content-length", str(len(body)).encode()))
        h2conn.send_headers(stream_id, all_headers, end_stream=not body)
        # Counted only now: h2 checks "open + 1 <= limit" while sending the headers.
        self._streams[stream_id] = _Stream(future)
        if body:
            await self._send_body(stream_id, body)
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY:
            self._flush()
        else:
            self._schedule_flush()
        timer = self._loop.call_later(timeout, self._time_out, stream_id, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        h2conn = self._h2
        while view:
            window = h2conn.local_flow_control_window(stream_id)
            size = min(window, h2conn.max_outbound_frame_size, len(view))
            if size <= 0:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._window_waiters.append(waiter)
                self._flush()
                await waiter
                if stream_id not in self._streams:
                    return  # failed while waiting; its future holds the error
                continue
            h2conn.send_data(stream_id, bytes(view[:size]), end_stream=size == len(view))
            view = view[size:]

    def _time_out(self, stream_id: int, timeout: float) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.future.done():
            stream.future.set_exception(
                ConnectionLost(f"no response within {timeout:g} s (stream cancelled)")
            )
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._h2.forget(stream_id)
        self._release_slot()
        self._schedule_flush()

    # -- writing -------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._unflushed = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _abort(self, error: H2Error) -> None:
        self.draining = True
        self._fail_streams(lambda _sid: error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Say GOAWAY and close once the streams in flight are done."""
        self.draining = True
        if self._transport is None or self._transport.is_closing():
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
            self._flush()
        if not self._streams:
            self._transport.close()


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """TLS for HTTP/2: ALPN h2, system trust or the given CA bundle (e.g. an emulator's)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    return context


class H2Client:
    """A small pool of HTTP/2 connections to one origin, reconnecting as needed.

    Requests go to the open connection with the most free stream slots; a new connection is
    opened only when every open one is full (up to `max_connections`). A request that the
    server certainly did not process (GOAWAY, REFUSED_STREAM) is retried once on a new
    connection; anything else is reported to the caller.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        max_connections: int = 1,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname or host
        self._max_connections = max(1, max_connections)
        self._max_streams = max_streams
        self._connect_timeout = connect_timeout
        self._connections: list[H2Connection] = []
        self._connecting: asyncio.Task[H2Connection] | None = None
        authority = host if port == 443 else f"{host}:{port}"
        self._authority = authority.encode()
        self.connections_opened = 0
        self._closed = False

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: Sequence[Header],
        body: bytes = b"",
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        unique_path: bool = False,
    ) -> Response:
        """Send a request, retrying once on a new connection if it was certainly unprocessed."""
        for attempt in (1, 2):
            connection = await self._pick()
            try:
                return await connection.request(method, path, headers, body, timeout, unique_path)
            except Unprocessed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _pick(self) -> H2Connection:
        while True:
            if self._closed:
                raise ConnectFailed("client is closed")
            live = [c for c in self._connections if not c.draining]
            if len(live) != len(self._connections):
                self._connections = live
            best = max(live, key=lambda c: c.free_slots, default=None)
            if best is not None and (best.free_slots > 0 or len(live) >= self._max_connections):
                return best
            # One connect at a time; afterwards everyone chooses again, so a burst spreads
            # over new connections only while the open ones are full.
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            task = self._connecting
            try:
                await asyncio.shield(task)
            finally:
                if self._connecting is task and task.done():
                    self._connecting = None

    async def _connect(self) -> H2Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: H2Connection(self._authority, self._max_streams),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
                ssl_object = protocol.transport.get_extra_info("ssl_object")
                alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
                if alpn != "h2":
                    protocol.transport.abort()
                    raise ConnectFailed(
                        f"{self.host}:{self.port} did not agree to HTTP/2 (ALPN {alpn!r})"
                    )
                await protocol.ready  # the server's SETTINGS (stream limit) have arrived
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise ConnectFailed(
                f"cannot connect to {self.host}:{self.port}: {error or type(error).__name__}"
            ) from error
        self.connections_opened += 1
        self._connections.append(protocol)
        return protocol

    async def aclose(self) -> None:
        """Close every connection (GOAWAY, then wait briefly for in-flight streams)."""
        self._closed = True
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await connection.closed
