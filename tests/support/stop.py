"""Providers that never answer, for the stop and deadline tests: a TCP listener that accepts
every connection and then says nothing (no TLS handshake, no HTTP), as a host that hangs.

Not a fixture module: tests build one with `SilentHost()` in a `with` block.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path
from types import TracebackType


class SilentHost:
    """Accepts connections on a loopback port and holds them open without a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="silent-host", daemon=True)

    @property
    def accepted(self) -> int:
        """Connections accepted so far (a client is hanging on each)."""
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._held.append(conn)

    def __enter__(self) -> SilentHost:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for conn in self._held:
                conn.close()


def service_account_pointing_at(source: Path, token_uri: str, target: Path) -> Path:
    """A copy of a service-account file whose token endpoint is `token_uri`."""
    info = json.loads(source.read_text())
    info["token_uri"] = token_uri
    target.write_text(json.dumps(info))
    return target
