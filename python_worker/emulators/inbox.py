"""What a push emulator accepted for each device token, handed to the phone as it arrives.

A real device keeps a connection open to FCM or APNs and is handed each message the moment
the provider accepts it. Here the phone simulator (python_worker.phone) does the same with a
long poll: `GET /_emulator/inbox?token=<token>&after=<n>&wait=<seconds>` answers at once when
the token has more than `n` pushes, and otherwise as soon as the next one is accepted (or
with nothing after `wait` seconds, and the phone asks again). Nothing is polled on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

#: The longest a phone's request is held open without news (it simply asks again).
MAX_WAIT_S = 60.0


class Inbox:
    """Accepted pushes per token, and the phones waiting for the next one (one event loop)."""

    def __init__(self, *, case_insensitive: bool = False) -> None:
        self._pushes: dict[str, list[dict[str, object]]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # APNs device tokens are hex and compared without regard to case; FCM's are not.
        self._case_insensitive = case_insensitive

    def _key(self, token: str) -> str:
        return token.lower() if self._case_insensitive else token

    def put(self, token: str, push: dict[str, object]) -> None:
        """Record one accepted push and wake whoever waits for this token."""
        key = self._key(token)
        self._pushes.setdefault(key, []).append(push)
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Forget every push (the emulator's reset)."""
        self._pushes.clear()

    def received(self) -> list[dict[str, object]]:
        """Every message accepted, as (token, received_at) records (benchmarks count them)."""
        return [
            {"token": token, "received_at": push.get("received_at")}
            for token, pushes in self._pushes.items()
            for push in pushes
        ]

    def since(self, token: str, after: int) -> list[dict[str, object]]:
        """The token's pushes after the first `after` ones."""
        return self._pushes.get(self._key(token), [])[after:]

    async def wait(self, token: str, after: int, wait_s: float) -> dict[str, object]:
        """The pushes after `after`, waiting up to `wait_s` for one when there are none yet."""
        key = self._key(token)
        if not self.since(key, after) and wait_s > 0:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), min(wait_s, MAX_WAIT_S))
            finally:
                waiting = self._waiters.get(key, [])
                if waiter in waiting:
                    waiting.remove(waiter)
        pushes = self.since(key, after)
        return {"token": token, "pushes": pushes, "next": after + len(pushes)}


def inbox_query(path: str) -> tuple[str, int, float]:
    """`token`, `after` and `wait` of an inbox request; ValueError naming the bad field."""
    query = parse_qs(urlsplit(path).query)
    token = (query.get("token") or [""])[0]
    if not token:
        raise ValueError("token: required (the device token whose pushes to read)")
    try:
        after = int((query.get("after") or ["0"])[0])
        wait = float((query.get("wait") or ["0"])[0])
    except ValueError:
        raise ValueError("after and wait must be numbers") from None
    if after < 0 or not 0 <= wait <= MAX_WAIT_S:
        raise ValueError(f"after must be >= 0 and wait between 0 and {MAX_WAIT_S:g} seconds")
    return token, after, wait
