"""The alert emulators on a loop of their own (a background thread), for tests.

Blocking clients (the official `twilio` library, urllib) and our async senders can then both
reach them. Imported by name from the tests; no fixtures here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from python_worker.emulators.alerts import AlertEmulators

T = TypeVar("T")


class ThreadedAlerts:
    def __init__(self, emulators: AlertEmulators) -> None:
        self.emulators = emulators
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        self.run(self.emulators.start())

    def stop(self) -> None:
        try:
            self.run(self.emulators.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@contextmanager
def alert_emulators(folder: Path, **options: Any) -> Iterator[ThreadedAlerts]:
    threaded = ThreadedAlerts(AlertEmulators(folder, **options))
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()
