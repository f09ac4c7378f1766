"""Fixtures for the push-provider tests: the FCM and APNs emulators and our senders.

The emulators run on their own event loop in a background thread (firebase-admin fetches
OAuth tokens with blocking calls inside its async client; one shared loop would deadlock).
Each test gets them with faults, registries and records cleared.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from python_worker.emulators.suite import Endpoints, ThreadedSuite, emulators_in_thread
from python_worker.push.apns import ApnsSender
from python_worker.push.fcm import FcmSender
from python_worker.push.payloads import IncomingCall

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop."""
    return asyncio.run(coroutine)


class Closable(Protocol):
    async def aclose(self) -> None: ...


S = TypeVar("S", bound=Closable)


def once(sender: S, send: Callable[[S], Awaitable[T]]) -> T:
    """Use a fresh sender for one send (on a fresh loop), then close it."""

    async def body() -> T:
        try:
            return await send(sender)
        finally:
            await sender.aclose()

    return run(body())


def fcm_token() -> str:
    """A well-formed FCM registration token (the emulator accepts unknown tokens)."""
    return "fcm-" + secrets.token_urlsafe(48).replace("-", "_")


def apns_token() -> str:
    """A well-formed APNs device token: 64 hex characters."""
    return secrets.token_hex(32)


def incoming_call(**overrides: Any) -> IncomingCall:
    values: dict[str, Any] = {
        "session_id": uuid.uuid4(),
        "caller_name": "CallPanion",
        "handle": "Mum",
        "ring_seconds": 45,
        "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2),
        "api_base": "https://api.callpanion.test",
        "household_id": uuid.uuid4(),
        "relative_id": uuid.uuid4(),
        "relative_name": "Mum",
        "extra": {"queue_id": str(uuid.uuid4())},
    }
    values.update(overrides)
    return IncomingCall(**values)


@pytest.fixture(scope="session")
def emulator_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedSuite]:
    with emulators_in_thread(tmp_path_factory.mktemp("emulators")) as suite:
        yield suite


@pytest.fixture
def emulators(emulator_suite: ThreadedSuite) -> Iterator[ThreadedSuite]:
    """The emulators, clean: no faults, empty records and registries."""
    suite = emulator_suite.suite

    def clean() -> None:
        suite.fcm.reset()
        suite.apns.reset()
        suite.fcm.tokens.clear()
        suite.apns.tokens.clear()
        suite.fcm.clock = time.time
        suite.apns.clock = time.time
        suite.fcm.token_lifetime_s = 3600

    clean()
    yield emulator_suite
    clean()
    emulator_suite.call(suite.apns_server.drop_all)
    emulator_suite.call(suite.fcm_server.drop_all)


@pytest.fixture
def endpoints(emulators: ThreadedSuite) -> Endpoints:
    return emulators.suite.endpoints


def make_fcm_sender(endpoints: Endpoints, **options: Any) -> FcmSender:
    """Our FCM sender, pointed at the emulator (through the service account's token_uri)."""
    return FcmSender.from_file(
        endpoints.service_account_file,
        base_url=endpoints.fcm_base_url,
        ca_file=str(endpoints.ca_file),
        **options,
    )


def make_apns_sender(endpoints: Endpoints, **options: Any) -> ApnsSender:
    """Our APNs sender, pointed at the emulator and trusting its CA."""
    return ApnsSender.from_file(
        endpoints.apns_key_file,
        endpoints.apns_key_id,
        endpoints.apns_team_id,
        endpoints.bundle_id,
        host=endpoints.apns_host,
        port=endpoints.apns_port,
        ca_file=str(endpoints.ca_file),
        **options,
    )
