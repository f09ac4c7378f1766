"""RealtimeWakeups against the Realtime stand-in: real websocket, real inserts, no mocks.

Rows are queued for real (a paired device, then `request_call_now` as service_role) in a
database of this module's own, and reach the source through the stand-in's trigger. Every
wait is on an event or a condition, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import psycopg
import pytest
from realtime.message import ServerMessageAdapter
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from python_worker.push.retry import RetryPolicy
from python_worker.stack.cluster import LocalStack
from python_worker.worker.realtime import RealtimeWakeups, insert_hint, realtime_endpoint
from python_worker.worker.wakeups import WakeHandlers
from tests.support.realtime_standin import Counts, StandIn, realtime_standin
from tests.support.world import apns_token, fcm_token

SERVICE_KEY = "service-key-" + secrets.token_hex(16)
#: Reconnect within a fraction of a second, so outages and refusals are cheap to test.
FAST = RetryPolicy(base_s=0.05, cap_s=0.2)
WAIT_S = 10.0

# realtime 2.34 reads ConnectionClosed.code and .reason, deprecated by websockets 13.1, when a
# socket drops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:ConnectionClosed.(code|reason) is deprecated:DeprecationWarning"
)


@pytest.fixture(scope="session")
def realtime_database(pg_stack: LocalStack) -> Iterator[str]:
    """A database of its own (the source sees committed inserts), migrated, dropped after."""
    with pg_stack.scratch_database("realtime") as url:
        yield url


@pytest.fixture
def standin(realtime_database: str) -> Iterator[StandIn]:
    with realtime_standin(realtime_database, SERVICE_KEY) as running:
        yield running


class Recorder(logging.Handler):
    """The handlers a source calls, and the wake-up log lines, with a way to wait on them."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.wakes: list[dt.datetime | None] = []
        self.connects = 0
        self.logs: list[logging.LogRecord] = []
        self._changed = asyncio.Event()
        self.handlers = WakeHandlers(wake=self._wake, connected=self._connected)

    def _wake(self, hint: dt.datetime | None) -> None:
        self.wakes.append(hint)
        self._changed.set()

    def _connected(self) -> None:
        self.connects += 1
        self._changed.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.logs.append(record)
        self._changed.set()

    def logged(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.logs if r.getMessage() == message]

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(source: RealtimeWakeups, recorder: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    """Run the source, log into the recorder, and cancel it afterwards (as the worker does)."""
    logger = logging.getLogger("callpanion.wakeups")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    task = asyncio.create_task(source.run(recorder.handlers))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.removeHandler(recorder)
        logger.setLevel(level)


def assert_nothing_left_running() -> None:
    """Cancellation left no task of the client behind (the loop could close right now)."""
    left = asyncio.all_tasks() - {asyncio.current_task()}
    assert not left, left


async def waiting(standin: StandIn, predicate: Callable[[Counts], bool]) -> Counts:
    return await asyncio.to_thread(standin.wait_for, predicate, WAIT_S)


async def queue_call_now(database_url: str) -> dt.datetime:
    """Pair a device for a new relative and ring them now, as the service role would: one
    committed notification_queue insert. Returns its send_at."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():

        async def one(query: Any, params: list[Any]) -> Any:
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
            assert row is not None
            return row[0]

        household = await one(
            "insert into households (name) values (%s) returning id", ["Realtime family"]
        )
        relative = await one(
            "insert into relatives (household_id, display_name, timezone)"
            " values (%s, 'Mum', 'Europe/London') returning id",
            [household],
        )
        await conn.execute(
            """insert into device_pairs (household_id, relative_id, status, platform,
                       voip_token, apns_token, fcm_token, secret_hash, paired_at)
                   values (%s, %s, 'active', 'ios', %s, %s, %s, 'hash-of-secret', now())""",
            [household, relative, apns_token(), apns_token(), fcm_token()],
        )
        await conn.execute("set local role service_role")
        await conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [json.dumps({"role": "service_role"})],
        )
        session = await one("select public.request_call_now(%s)", [relative])
        await conn.execute("reset role")
        send_at: dt.datetime = await one(
            "select send_at from notification_queue where call_session_id = %s", [session]
        )
    return send_at


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a scenario on a fresh loop; the loop must report nothing (no task destroyed while
    pending, no exception never retrieved)."""
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        await scenario()
        gc.collect()  # an unretrieved exception is reported when its task is collected

    asyncio.run(main())
    assert not reported, reported


# --- the hint itself -------------------------------------------------------------------------


def test_the_hint_is_the_inserted_rows_send_at_or_none() -> None:
    def change(record: Any) -> dict[str, Any]:
        return {"ids": [1], "data": {"type": "INSERT", "record": record}}

    when = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)
    assert insert_hint(change({"send_at": "2026-03-29T00:30:00+00:00"})) == when
    assert insert_hint(change({"send_at": "2026-03-29T01:30:00+01:00"})) == when
    assert insert_hint(change({"send_at": "2026-03-29T00:30:00"})) == when  # naive: UTC
    for record in ({}, {"send_at": None}, {"send_at": "soon"}, None, "x"):
        assert insert_hint(change(record)) is None
    assert insert_hint({}) is None


def test_the_endpoint_is_the_project_urls_realtime_v1() -> None:
    assert realtime_endpoint("https://abc.supabase.co/") == "https://abc.supabase.co/realtime/v1"
    assert realtime_endpoint("http://127.0.0.1:54321") == "http://127.0.0.1:54321/realtime/v1"


# --- the stand-in speaks Realtime's protocol ---------------------------------------------------


def test_the_standin_answers_frames_as_realtime_does(standin: StandIn) -> None:
    socket_url = standin.url.replace("http://", "ws://") + "/realtime/v1/websocket"
    binding = {"event": "INSERT", "schema": "public", "table": "notification_queue"}

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{socket_url}?apikey=wrong&vsn=1.0.0"):
                pass
        assert refused.value.response.status_code == 403
        async with connect(f"{socket_url}?apikey={SERVICE_KEY}&vsn=1.0.0") as ws:

            async def send(topic: str, event: str, payload: dict[str, Any], ref: str) -> None:
                frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
                await ws.send(json.dumps({**frame, "join_ref": ref}))

            async def received() -> dict[str, Any]:
                raw = await ws.recv()
                ServerMessageAdapter.validate_json(raw)  # what the official client accepts
                frame: dict[str, Any] = json.loads(raw)
                return frame

            await send("phoenix", "heartbeat", {}, "1")
            ok: dict[str, Any] = {"status": "ok", "response": {}}
            assert await received() == {
                "topic": "phoenix",
                "event": "phx_reply",
                "payload": ok,
                "ref": "1",
            }

            config = {"config": {"postgres_changes": [binding]}}
            await send("realtime:q", "phx_join", {**config, "access_token": "wrong"}, "2")
            refusal = await received()
            assert refusal["payload"]["status"] == "error"
            assert refusal["payload"]["response"]["reason"].startswith("InvalidJWTToken")

            await send("realtime:q", "phx_join", {**config, "access_token": SERVICE_KEY}, "3")
            joined = await received()
            assert joined["ref"] == "3"
            assert joined["payload"]["status"] == "ok"
            [answer] = joined["payload"]["response"]["postgres_changes"]
            assert answer == {**binding, "id": answer["id"]}
            assert isinstance(answer["id"], int)
            assert answer["id"] > 0
            live = await received()
            assert (live["event"], live["ref"]) == ("system", None)
            assert live["payload"] == {
                "channel": "q",
                "extension": "postgres_changes",
                "status": "ok",
                "message": "Subscribed to PostgreSQL",
            }

            await send("realtime:q", "access_token", {"access_token": SERVICE_KEY}, "4")
            await send("realtime:q", "phx_leave", {}, "5")
            left = await received()
            assert (left["ref"], left["payload"]["status"]) == ("5", "ok")
            await send("realtime:q", "broadcast", {}, "6")
            unmatched = await received()
            reason = {"reason": "unmatched topic"}
            assert unmatched["payload"] == {"status": "error", "response": reason}
        counts = await waiting(standin, lambda c: c.open == 0)
        assert (counts.refused, counts.joins, counts.join_errors, counts.leaves) == (1, 1, 1, 1)

    run(scenario)


# --- RealtimeWakeups against the stand-in ----------------------------------------------------------------------------------------------------------------------


def test_an_insert_wakes_the_source_with_the_rows_send_at(
    standin: StandIn, realtime_database: str
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with running(RealtimeWakeups(standin.url, SERVICE_KEY), recorder):
            await recorder.until(lambda: recorder.connects == 1)
            send_at = await queue_call_now(realtime_database)
            await recorder.until(lambda: len(recorder.wakes) == 1)
            assert recorder.wakes == [send_at]
        assert_nothing_left_running()
        assert standin.counts.deliveries == 1

    run(scenario)


def test_connected_is_called_once_the_change_feed_is_live(standin: StandIn) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        source = RealtimeWakeups(standin.url, SERVICE_KEY)
        async with running(source, recorder):
            await recorder.until(lambda: recorder.connects == 1)
            counts = standin.counts
            assert (counts.connections, counts.joins, counts.refused) == (1, 1, 0)
            assert source.connects == 1
            assert source.failures == 0
            assert recorder.wakes == []
            [live] = recorder.logged("realtime change feed live")
            assert live.__dict__["table"] == "public.notification_queue"
        assert_nothing_left_running()

    run(scenario)


def test_a_dropped_socket_resubscribes_calls_connected_again_and_still_wakes(
    standin: StandIn, realtime_database: str
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with running(
            RealtimeWakeups(standin.url, SERVICE_KEY, reconnect_policy=FAST), recorder
        ):
            await recorder.until(lambda: recorder.connects == 1)
            assert await asyncio.to_thread(standin.drop_sockets) == 1
            await recorder.until(lambda: recorder.connects == 2)
            counts = await waiting(standin, lambda c: c.disconnects == 1)
            assert (counts.connections, counts.joins, counts.open) == (2, 2, 1)
            assert counts.close_codes == (1006,)  # cut, not closed
            [lost] = recorder.logged("realtime subscription lost; reconnecting")
            assert "CHANNEL_ERROR" in lost.__dict__["error"]

            send_at = await queue_call_now(realtime_database)
            await recorder.until(lambda: len(recorder.wakes) == 1)
            assert recorder.wakes == [send_at]
        assert_nothing_left_running()

    run(scenario)


def test_an_outage_longer_than_a_few_attempts_ends_in_a_new_subscription(
    standin: StandIn, realtime_database: str
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        source = RealtimeWakeups(standin.url, SERVICE_KEY, reconnect_policy=FAST)
        async with running(source, recorder) as task:
            await recorder.until(lambda: recorder.connects == 1)
            url = standin.url
            await asyncio.to_thread(standin.stop_server)
            failed = "realtime connection failed; retrying"
            await recorder.until(lambda: len(recorder.logged(failed)) >= 4)
            assert not task.done()
            assert source.failures >= 5  # the loss, then every refused attempt
            delays = [r.__dict__["retry_in_s"] for r in recorder.logged(failed)]
            assert all(0 < d <= FAST.cap_s for d in delays)

            await asyncio.to_thread(standin.restart_server)
            assert standin.url == url
            await recorder.until(lambda: recorder.connects == 2)
            assert source.failures == 0
            send_at = await queue_call_now(realtime_database)
            await recorder.until(lambda: len(recorder.wakes) == 1)
            assert recorder.wakes == [send_at]
        assert_nothing_left_running()
        assert standin.counts.close_codes[0] == 1001  # the outage closed it: going away

    run(scenario)


def test_a_wrong_service_key_never_wakes_and_keeps_retrying(
    standin: StandIn, realtime_database: str
) -> None:
    async def scenario() -> None:
        refused, good = Recorder(), Recorder()
        wrong = RealtimeWakeups(standin.url, "not-the-key", reconnect_policy=FAST)
        async with (
            running(wrong, refused) as wrong_task,
            running(RealtimeWakeups(standin.url, SERVICE_KEY), good),
        ):
            await waiting(standin, lambda c: c.refused >= 3)
            await good.until(lambda: good.connects == 1)
            # The good source hears the insert: the wrong one had the same chance.
            send_at = await queue_call_now(realtime_database)
            await good.until(lambda: good.wakes == [send_at])
            assert refused.wakes == []
            assert refused.connects == 0
            assert not wrong_task.done()
            errors = [
                r.__dict__["error"] for r in refused.logged("realtime connection failed; retrying")
            ]
            assert errors
            assert all("403" in e for e in errors), errors
        assert_nothing_left_running()
        assert standin.counts.connections == 1  # only the good source got a websocket

    run(scenario)


def test_cancelling_run_closes_the_websocket_cleanly(standin: StandIn) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with running(RealtimeWakeups(standin.url, SERVICE_KEY), recorder):
            await recorder.until(lambda: recorder.connects == 1)
            assert standin.counts.open == 1
        assert_nothing_left_running()
        counts = await waiting(standin, lambda c: c.open == 0)
        assert counts.close_codes == (1000,)  # a closing handshake, not a dropped line

    run(scenario)


def test_a_table_outside_the_realtime_publication_is_never_live(standin: StandIn) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        source = RealtimeWakeups(
            standin.url, SERVICE_KEY, table="webhook_events", reconnect_policy=FAST
        )
        async with running(source, recorder):
            await waiting(standin, lambda c: c.subscribe_errors >= 3)
            assert recorder.connects == 0
            assert source.connects == 0
            lost = recorder.logged("realtime subscription lost; reconnecting")
            assert lost
            assert "Unable to subscribe to changes" in lost[0].__dict__["error"]
        assert_nothing_left_running()

    run(scenario)
