"""Fault injection shared by the emulators: answer a token (or every token) with an error.

A fault is looked up by the push token of a request, then by "*" (any token). It may add
latency, answer with a provider error (status, reason, Retry-After), drop the connection or
send GOAWAY, for a number of requests (`times`) or until cleared. From Python a fault may also
`hold` its answer until a test sets an event, so a test can keep a push unanswered for
exactly as long as it needs, not for a guessed number of seconds. Tests set faults through
the Python API; chaos runs and the demo through `POST /_emulator/faults` with the same fields.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field, fields
from typing import Literal

ANY = "*"


@dataclass
class Fault:
    """What to do instead of (or before) the normal answer."""

    status: int | None = None
    # APNs: the `reason`; FCM: the FcmError `errorCode` (or UNAUTHENTICATED for a bare 401).
    reason: str | None = None
    retry_after: str | None = None
    latency_s: float = 0.0
    action: Literal["drop", "goaway"] | None = None
    # How many requests it applies to; None means until cleared.
    times: int | None = None
    # Python only: no answer until this is set (then `latency_s`, then the answer).
    hold: threading.Event | None = field(default=None, compare=False, repr=False)

    @property
    def delays(self) -> bool:
        """Whether the answer waits (for `hold`, or `latency_s`)."""
        return self.hold is not None or self.latency_s > 0

    async def wait(self) -> None:
        """Wait for `hold` (in a thread: it is set from the test's), then for `latency_s`."""
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait)
        await asyncio.sleep(self.latency_s)

    @classmethod
    def from_json(cls, body: dict[str, object]) -> tuple[str, Fault]:
        """Parse the admin endpoint's JSON: {"token": "...", "status": 410, ...}."""
        allowed = {"token", "status", "reason", "retry_after", "latency_ms", "action", "times"}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        token = body.get("token", ANY)
        status = body.get("status")
        reason = body.get("reason")
        retry_after = body.get("retry_after")
        latency_ms = body.get("latency_ms", 0)
        action = body.get("action")
        times = body.get("times")
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string (or '*')")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("reason must be a string")
        if retry_after is not None and not isinstance(retry_after, str | int):
            raise ValueError("retry_after must be seconds or an HTTP date")
        if not isinstance(latency_ms, int | float) or latency_ms < 0:
            raise ValueError("latency_ms must be a number >= 0")
        if action not in (None, "drop", "goaway"):
            raise ValueError("action must be 'drop' or 'goaway'")
        if times is not None and not (isinstance(times, int) and times > 0):
            raise ValueError("times must be a positive integer")
        return token, cls(
            status=status,
            reason=reason,
            retry_after=None if retry_after is None else str(retry_after),
            latency_s=float(latency_ms) / 1000,
            action=action,
            times=times,
        )

    def to_json(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hold"}


class Faults:
    """Faults by token; thread-safe, since tests set them from another thread."""

    def __init__(self) -> None:
        self._rules: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, token: str, fault: Fault) -> None:
        with self._lock:
            self._rules.setdefault(token, []).append(fault)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, token: str, *, any_token: bool = True) -> Fault | None:
        """The fault for this request, if any, counting one use of it."""
        if not self._rules:
            return None
        with self._lock:
            for key in (token, ANY) if any_token else (token,):
                rules = self._rules.get(key)
                if not rules:
                    continue
                fault = rules[0]
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        rules.pop(0)
                        if not rules:
                            del self._rules[key]
                return fault
        return None

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        with self._lock:
            return {k: [f.to_json() for f in v] for k, v in self._rules.items()}
