"""The HTTP server under the emulators: HTTP/2 (h2) and HTTP/1.1 (h11) on one asyncio port.

TLS with ALPN picks the protocol (`h2` or `http/1.1`); without ALPN (plain TCP, or TLS from a
client that offers none, as aioapns does) a connection that opens with the HTTP/2 preface is
HTTP/2 (prior knowledge), anything else HTTP/1.1. An emulator is a
handler: `(Request) -> Response | Action`, sync or async. Actions let fault injection drop the
connection or send GOAWAY instead of answering.

HTTP/2 responses without a body end with the HEADERS frame (END_STREAM on HEADERS, no DATA
frame), as APNs does on success; some clients (aioapns) break on an empty DATA frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

from python_worker.push.http2 import CountedH2

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(slots=True)
class Request:
    """One request as the emulator saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    http_version: str  # "2" or "1.1"
    connection: ServerConnection
    stream_id: int = 0


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Action:
    """Instead of a response: `drop` aborts the TCP connection, `goaway` sends GOAWAY."""

    kind: Literal["drop", "goaway"]


Handler = Callable[[Request], "Response | Action | Awaitable[Response | Action]"]


class ServerConnection(asyncio.Protocol):
    """One client connection, HTTP/2 or HTTP/1.1."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.mode: Literal["h2", "h11"] | None = None
        self._h2: CountedH2 | None = None
        self._h11: h11.Connection | None = None
        self._streams: dict[int, tuple[dict[str, str], list[bytes]]] = {}
        # Streams whose request arrived and whose response is not sent yet.
        self._active: set[int] = set()
        self._pending = b""
        self._flush_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Per-connection state an emulator may keep (e.g. APNs provider-token updates).
        self.state: dict[str, object] = {}
        self.requests_seen = 0

    # -- set-up -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        # Without ALPN (aioapns sets none; APNs accepts that) the first bytes decide.
        if alpn == "h2":
            self._start("h2")
        elif alpn == "http/1.1":
            self._start("h11")

    def _start(self, mode: Literal["h2", "h11"]) -> None:
        self.mode = mode
        if mode == "h11":
            self._h11 = h11.Connection(h11.SERVER)
            return
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_outbound_headers=False
        )
        self._h2 = CountedH2(config, self._active.__len__)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.initial_max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window((1 << 24) - 65_535)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        # Requests fully received are still handled (and delivered) as APNs and FCM do: the
        # client's connection dropping before the answer is written does not undo the push.
        # Their answers go nowhere (`_respond` sees the closed transport).
        self.server.connections.discard(self)

    # -- input --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.mode is None:
            self._pending += data
            if len(self._pending) < len(H2_PREFACE) and H2_PREFACE.startswith(self._pending):
                return
            data, self._pending = self._pending, b""
            self._start("h2" if data.startswith(H2_PREFACE) else "h11")
        if self.mode == "h2":
            self._h2_received(data)
        else:
            self._h11_received(data)

    def _h2_received(self, data: bytes) -> None:
        conn = self._h2
        assert conn is not None
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._active.add(event.stream_id)
                self._streams[event.stream_id] = (dict(event.headers or ()), [])  # type: ignore[arg-type]
                if event.stream_ended is not None:
                    self._h2_dispatch(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                entry = self._streams.get(event.stream_id)
                if entry is not None and event.data:
                    entry[1].append(event.data)
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._h2_dispatch(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
                self._active.discard(event.stream_id)
                conn.forget(event.stream_id)
        self._schedule_flush()

    def _h2_dispatch(self, stream_id: int) -> None:
        entry = self._streams.pop(stream_id, None)
        if entry is None:
            return
        headers, chunks = entry
        request = Request(
            method=headers.get(":method", ""),
            path=headers.get(":path", ""),
            headers={k: v for k, v in headers.items() if not k.startswith(":")},
            body=b"".join(chunks),
            http_version="2",
            connection=self,
            stream_id=stream_id,
        )
        self._handle(request)

    def _h11_received(self, data: bytes) -> None:
        assert self._h11 is not None
        self._h11.receive_data(data)
        self._h11_pump()

    def _h11_pump(self) -> None:
        conn = self._h11
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                self._h11_send(Response(400, [("content-type", "text/plain")], b"bad request\n"))
                self.abort()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.state["h11_request"] = event
                self.state["h11_body"] = []
            elif isinstance(event, h11.Data):
                body = self.state["h11_body"]
                assert isinstance(body, list)
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                head = self.state.pop("h11_request")
                body = self.state.pop("h11_body")
                assert isinstance(head, h11.Request)
                assert isinstance(body, list)
                request = Request(
                    method=head.method.decode(),
                    path=head.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in head.headers},
                    body=b"".join(body),
                    http_version="1.1",
                    connection=self,
                )
                self._handle(request)
                return  # h11 serves one request at a time; the rest waits for the answer
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    # -- handling -----------------------------------------------------------------------
    def _handle(self, request: Request) -> None:
        self.requests_seen += 1
        self.server.requests_seen += 1
        try:
            outcome = self.server.handler(request)
        except Exception as error:  # a bug in an emulator must not look like a provider answer
            outcome = Response(
                500, [("content-type", "text/plain")], f"emulator bug: {error}\n".encode()
            )
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(self._finish(request, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.server.tasks.add(task)  # outlives a dropped connection, not the server
            task.add_done_callback(self.server.tasks.discard)
        else:
            self._respond(request, outcome)

    async def _finish(self, request: Request, pending: Awaitable[Response | Action]) -> None:
        try:
            outcome = await pending
        except Exception as error:
            outcome = Response(
                500, [("content-type", "text/plain")], f"emulator bug: {error}\n".encode()
            )
        self._respond(request, outcome)

    def _respond(self, request: Request, outcome: Response | Action) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(outcome, Action):
            if outcome.kind == "drop":
                self.abort()
            else:
                self.goaway(last_stream_id=max(request.stream_id - 2, 0))
            return
        if self.mode == "h2":
            self._h2_send(request.stream_id, outcome)
        else:
            self._h11_send(outcome)
            assert self._h11 is not None
            if self._h11.our_state is h11.MUST_CLOSE:
                self.close()
            else:
                with contextlib.suppress(h11.LocalProtocolError):
                    self._h11.start_next_cycle()
                    self._h11_pump()  # a pipelined request may already be buffered

    def _h2_send(self, stream_id: int, response: Response) -> None:
        conn = self._h2
        assert conn is not None
        headers = [(":status", str(response.status)), *response.headers]
        if response.body:
            headers.append(("content-length", str(len(response.body))))
        self._active.discard(stream_id)
        try:
            conn.send_headers(stream_id, headers, end_stream=not response.body)
            if response.body:
                conn.send_data(stream_id, response.body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client reset or gave up on this stream
        conn.forget(stream_id)
        self._schedule_flush()

    def _h11_send(self, response: Response) -> None:
        conn = self._h11
        assert conn is not None
        assert self.transport is not None
        headers = [*response.headers, ("content-length", str(len(response.body)))]
        try:
            data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
            if response.body:
                data += conn.send(h11.Data(data=response.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self.abort()
            return
        self.transport.write(data)

    # -- control ------------------------------------------------------------------------
    def update_max_streams(self, value: int) -> None:
        """Advertise a new concurrent-stream limit (APNs raises it after the first success)."""
        if self._h2 is None:
            return
        self._h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: value})
        self._schedule_flush()

    def goaway(self, last_stream_id: int | None = None) -> None:
        """Send GOAWAY (NO_ERROR) and close after a moment; streams above last_stream_id die."""
        if self._h2 is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection(
                    error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=last_stream_id
                )
            self._flush()
        if self.transport is not None:
            asyncio.get_running_loop().call_later(0.05, self.close)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._h2 is None or self.transport is None or self.transport.is_closing():
            return
        data = self._h2.data_to_send()
        if data:
            self.transport.write(data)


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS for an emulator: its certificate, ALPN h2 and http/1.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


class HttpServer:
    """An asyncio server for one emulator on loopback."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        initial_max_streams: int = 1000,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.initial_max_streams = initial_max_streams
        self.connections: set[ServerConnection] = set()
        self.requests_seen = 0
        #: Requests being answered (an injected latency), whatever became of their connection.
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConnection(self),
            self.host,
            self.port,
            ssl=self.ssl_context,
            reuse_address=True,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.abort()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None

    def goaway_all(self) -> None:
        """Send GOAWAY on every open connection (as a provider does when it restarts)."""
        for connection in list(self.connections):
            connection.goaway()

    def drop_all(self) -> None:
        """Abort every open connection (as a network failure would)."""
        for connection in list(self.connections):
            connection.abort()
