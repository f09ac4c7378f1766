"""A sliding-window rate limit per client address, kept in the process.

Used for pairing: at most `limit` requests per `window` seconds from one address. It is per
API instance (several instances each allow `limit`); the SQL lock after five wrong codes is
the limit that holds across instances.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

#: Addresses remembered at most; beyond this the idle ones are forgotten first.
MAX_TRACKED_ADDRESSES = 100_000


class SlidingWindowLimiter:
    """`hit(key)` records a request and says how long to wait when over the limit."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """None when allowed (and counted); else the seconds until the next one is allowed."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window - now, 0.0)
            hits.append(now)
            if len(self._hits) > MAX_TRACKED_ADDRESSES:
                self._forget_idle(now)
            return None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]
