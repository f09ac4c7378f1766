"""A sliding-window rate limit per client address, kept in the process, and what counts as
the client's address.

Used for pairing: at most `limit` requests per `window` seconds from one address. It is per
API instance (several instances each allow `limit`); the SQL budgets (per code, per
household, for unknown pairing ids) are the limits that hold across instances.

The address is the TCP peer's, unless the peer is a configured proxy: only then is
`X-Forwarded-For` read, from the right, skipping the configured proxies, so a client cannot
choose its own counted address by sending the header itself. An IPv6 client is counted per
/64, the smallest block one subscriber is usually given.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def trusted_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The configured proxies (addresses or networks) as networks."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is that IPv4 client
    return address


def client_key(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The key a client is counted under: its IPv4 address, or its IPv6 /64.

    `forwarded_for` is every X-Forwarded-For header value, in order; they are read only when
    the peer is a trusted proxy, from the nearest hop back, and the first hop that is not a
    trusted proxy is the client. A malformed hop ends the walk at the last trusted one.
    """
    client = _address(peer or "")
    if client is None:
        return "unknown"
    if trusted and any(client in network for network in trusted):
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = address
            if not any(address in network for network in trusted):
                break
    if isinstance(client, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)
