"""The admin routes every push emulator serves beside the provider's own (`/_emulator/...`).

GET    /_emulator/deliveries   what was accepted (and counts)
POST   /_emulator/faults       {"token": "<token or *>", "status", "reason", "retry_after",
                                "latency_ms", "action": "drop"|"goaway", "times"}
DELETE /_emulator/faults       clear every fault
POST   /_emulator/tokens       {"token", "state"}: the token registry
POST   /_emulator/reset        forget deliveries and faults
POST   /_emulator/goaway       GOAWAY on every other open connection
GET    /_emulator/inbox?token=T&after=N&wait=S
                               the pushes accepted for one token after the first N, waiting
                               up to S seconds for the next (the phone simulator's long poll)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from python_worker.emulators.faults import Fault, Faults
from python_worker.emulators.inbox import Inbox, inbox_query
from python_worker.emulators.server import Action, Request, Response


def json_response(status: int, body: object) -> Response:
    return Response(status, [("content-type", "application/json")], json.dumps(body).encode())


@dataclass
class AdminRoutes:
    """One emulator's admin API: the shared routes around its own registry and records."""

    faults: Faults
    deliveries: Callable[[], dict[str, object]]
    set_token: Callable[[dict[str, object]], dict[str, object]]
    reset: Callable[[], None]
    # How a fault's token is keyed (APNs tokens are case-insensitive hex).
    token_key: Callable[[str], str] = str
    # Pushes per token for the phone simulator's long poll (none: the route answers 404).
    inbox: Inbox | None = None

    def handle(self, request: Request) -> Response | asyncio.Future[Response | Action]:
        route = (request.method, urlsplit(request.path).path.removeprefix("/_emulator"))
        try:
            if route == ("GET", "/inbox") and self.inbox is not None:
                token, after, wait = inbox_query(request.path)
                return asyncio.ensure_future(self._inbox(token, after, wait))
            body = json.loads(request.body) if request.body else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            if route == ("GET", "/deliveries"):
                return json_response(200, self.deliveries())
            if route == ("POST", "/faults"):
                token, fault = Fault.from_json(body)
                self.faults.add(self.token_key(token), fault)
                return json_response(200, {"faults": self.faults.snapshot()})
            if route == ("DELETE", "/faults"):
                self.faults.clear()
                return json_response(200, {"faults": {}})
            if route == ("POST", "/tokens"):
                return json_response(200, self.set_token(body))
            if route == ("POST", "/reset"):
                self.reset()
                return json_response(200, {"reset": True})
            if route == ("POST", "/goaway"):
                for connection in list(request.connection.server.connections):
                    if connection is not request.connection:
                        connection.goaway()
                return json_response(200, {"goaway": True})
        except ValueError as problem:
            return json_response(400, {"error": str(problem)})
        return json_response(404, {"error": f"no admin route {request.method} {request.path}"})

    async def _inbox(self, token: str, after: int, wait: float) -> Response | Action:
        assert self.inbox is not None
        return json_response(200, await self.inbox.wait(token, after, wait))
