"""`callpanion worker`: the loop that sends every call at its time.

    wake-up source (NOTIFY / Realtime / none) --hint--> loop --claim--> Dispatcher batches
    timer for the earliest send_at ------------------->  |              (send, record)
    poll every CALLPANION_POLL_INTERVAL_SECS ---------->  |

The loop claims whatever is ready (and up to CALLPANION_CLAIM_AHEAD_MS ahead), hands each
batch to the dispatcher, and asks the database when the next row falls due; then it sleeps
until that moment (minus the claim-ahead), a hint, or the poll interval, whichever is first.
Hints are only hints: the timer and the poll alone send every call on time.

The process holds a presence lock under a lease owner of its own (presence.py), so a
worker that dies is noticed by the others at once: while another live worker holds rows, the
loop looks again every PEER_CHECK_S, and its next claim takes back a dead one's rows. When a
ring window ends, the loop runs phase 2 (`run_phase2_now`) rather than waiting for pg_cron's
minute, so an unanswered call is marked missed (and retried) within moments.

SIGTERM / SIGINT: stop claiming, let running sends finish, record their results, give back
every row not sent (only this process's), exit, all within CALLPANION_SHUTDOWN_GRACE_SECS
+ 0.5 s (8.5 s by default, under `docker stop`'s 10 s) whatever the providers and the
database do: every step has its share of the grace (`_shutdown`), and a watchdog thread ends
the process (exit 70) if anything still holds it half a second after the grace. A second
SIGTERM or SIGINT ends it at once (exit status 128 + the signal); its rows come back through
its presence lock, which dies with it.
A lost database connection is retried with backoff; nothing is lost meanwhile (rows stay
queued, leases run out and return).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

import psycopg

from python_worker.errors import CallPanionError
from python_worker.notify.senders import Notifiers
from python_worker.push.apns import ApnsSender
from python_worker.push.fcm import FcmSender
from python_worker.push.retry import RetryPolicy
from python_worker.push.settings import apns_settings, fcm_settings
from python_worker.worker.cancels import CancelNotices
from python_worker.worker.db import NextWork, WorkerDatabase
from python_worker.worker.dispatcher import CallText, Dispatcher, Senders
from python_worker.worker.metrics import Metrics
from python_worker.worker.outbox import OutboxDelivery
from python_worker.worker.presence import Presence, lease_owner
from python_worker.worker.provider_deletion import ProviderDeletions
from python_worker.worker.realtime import RealtimeWakeups
from python_worker.worker.settings import WorkerSettings
from python_worker.worker.wakeups import NotifyWakeups, PollOnly, WakeHandlers, WakeupSource

log = logging.getLogger("callpanion.worker")

#: Backoff while the database is away: 0.5-1 s, doubling, at most 10 s.
DB_RETRY = RetryPolicy(base_s=1.0, cap_s=10.0)
#: When claims come back empty although a row is ready (another worker holds its lock for a
#: moment), look again after this long rather than spinning.
MIN_IDLE_S = 0.02
#: /healthz fails when the loop has not reached the database for this long.
HEALTH_STALE_S = 30.0
#: While another live worker holds rows, look again this often: if it has died meanwhile,
#: the next claim takes its rows back (its lock is gone). Bounds a dead worker's calls'
#: extra lateness; one cheap claim per look.
PEER_CHECK_S = 0.25
#: Of the shutdown grace, what is kept for recording results, giving rows back and closing
#: connections after running sends are cut off (at most half the grace).
FINISH_RESERVE_S = 2.0
#: How long tasks still running after the worker's own stop may take to end when cancelled.
LEFTOVER_S = 0.1
#: The watchdog ends the process this long after the grace, if the graceful path (which
#: aims to be done within the grace) is still held: the bound is grace + this.
WATCHDOG_MARGIN_S = 0.5
#: Exit status when the watchdog has to end a stop that overran the grace.
OVERRAN_EXIT = 70

T = TypeVar("T")

#: Phase 2 is run at most this often for ring windows that ended (if it cannot settle one,
#: say the session changed meanwhile, the loop does not spin on it).
PHASE2_MIN_GAP_S = 1.0


def wakeup_source(settings: WorkerSettings) -> WakeupSource:
    if settings.wakeup == "notify":
        return NotifyWakeups(settings.database_url)
    if settings.wakeup == "realtime":
        if not (settings.supabase_url and settings.supabase_service_key):
            raise CallPanionError(
                "CALLPANION_WAKEUP=realtime needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
            )
        return RealtimeWakeups(settings.supabase_url, settings.supabase_service_key)
    return PollOnly()


def build_senders() -> Senders:
    """The providers configured by FCM_* / APNS_* (either may be absent)."""
    fcm = fcm_settings()
    apns = apns_settings()
    return Senders(
        FcmSender.from_settings(fcm) if fcm else None,
        ApnsSender.from_settings(apns) if apns else None,
    )


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        senders: Senders,
        source: WakeupSource,
        *,
        notifiers: Notifiers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        #: This process's name in leases: the configured id plus a per-boot suffix.
        self.owner = lease_owner(settings.worker_id)
        self.db = WorkerDatabase(settings.database_url, settings.db_role, self.owner)
        self.presence = Presence(settings.database_url, settings.db_role, self.owner)
        self.dispatcher = Dispatcher(
            self.db,
            senders,
            self.metrics,
            CallText(settings.caller_name, settings.public_api_url),
            lease_s=settings.lease_s,
            clock=clock,
        )
        self.dispatcher.batch_done = self._batch_done
        self.cancels = CancelNotices(
            self.db, senders, lease_s=settings.lease_s, poll_interval_s=settings.poll_interval_s
        )
        #: Family alerts, on the same lease owner, presence lock, metrics and wake-ups.
        self.alerts = OutboxDelivery(
            self.db,
            notifiers or Notifiers(None, None, None, public_url=settings.public_api_url),
            self.metrics,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
            clock=clock,
        )
        #: Erasure's deletions at ElevenLabs: the same owner, presence lock and wake-ups.
        self.deletions = ProviderDeletions(
            self.db,
            base_url=settings.elevenlabs_base_url,
            api_key=settings.elevenlabs_api_key,
            lease_s=settings.lease_s,
            poll_interval_s=settings.poll_interval_s,
        )
        self.source = source
        self.clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._batches: set[asyncio.Task[None]] = set()
        self._last_db_ok = 0.0
        self._phase2_at = -PHASE2_MIN_GAP_S
        self._phase2_for: dt.datetime | None = None  # the ring end phase 2 last ran for
        self._source_connected = False
        self._stop_at: float | None = None
        self._signals = 0
        self.http_port: int | None = None

    # -- signals from outside -------------------------------------------------------------
    def _signalled(self, loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT: the first begins a graceful stop, bounded by a watchdog; the
        second ends the process at once."""
        if self._signals:
            os.write(2, f"second {sig.name}: exiting now\n".encode())
            os._exit(128 + sig)
        self._signals += 1
        self._start_watchdog()
        loop.call_soon_threadsafe(self.stop)

    def _start_watchdog(self) -> None:
        grace = self.settings.shutdown_grace_s

        def overran() -> None:
            log.error(
                "stop overran the shutdown grace; exiting now",
                extra={"grace_s": grace, "threads": [t.name for t in threading.enumerate()]},
            )
            _flush_logs()
            os._exit(OVERRAN_EXIT)

        watchdog = threading.Timer(grace + WATCHDOG_MARGIN_S, overran)
        watchdog.daemon = True
        watchdog.name = "stop-watchdog"
        watchdog.start()

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            log.info(
                "stopping: no new claims; finishing sends", extra={"in_flight": self.in_flight}
            )
        self._stop.set()
        self.dispatcher.stop()
        self._wake.set()

    def _hint(self, _earliest: dt.datetime | None) -> None:
        self.metrics.wakeups.inc()
        self._wake.set()
        self.cancels.wake()
        self.alerts.wake()
        self.deletions.wake()

    def _connected(self) -> None:
        self._source_connected = True
        self._wake.set()  # catch up: anything queued while the source was away
        self.cancels.wake()
        self.alerts.wake()
        self.deletions.wake()

    def _batch_done(self) -> None:
        # A fallback is due at once, a retry soon: look again now.
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self.dispatcher.in_flight)

    # -- the loop -------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, object] = {}
        if install_signals:
            # signal.signal, not loop.add_signal_handler: the handler runs in the main thread
            # even while the event loop is stuck in a blocking call, so the watchdog and the
            # second signal always work; the graceful part is handed to the loop.
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(
                    sig, lambda signum, _frame: self._signalled(loop, signal.Signals(signum))
                )
        await self.db.open()
        server = await asyncio.start_server(
            self._serve_http, self.settings.http_host, self.settings.http_port
        )
        self.http_port = server.sockets[0].getsockname()[1]
        source_task = asyncio.create_task(
            self.source.run(WakeHandlers(self._hint, self._connected)), name="wakeups"
        )
        renew_task = asyncio.create_task(self._renew_leases(), name="lease-renewal")
        cancel_task = asyncio.create_task(self.cancels.run(), name="cancel-notices")
        alerts_task = asyncio.create_task(self._alerts(), name="alerts")
        deletions_task = asyncio.create_task(self._deletions(), name="provider-deletions")
        log.info(
            "worker started",
            extra={
                "worker_id": self.settings.worker_id,
                "lease_owner": self.owner,
                "wakeup": self.source.name,
                "http_port": self.http_port,
                "batch_size": self.settings.batch_size,
            },
        )
        try:
            await self._loop()
        finally:
            await self._shutdown()
            # Each step gets what is left of the grace; a task that does not end when it is
            # cancelled (a query on a frozen database, say) is left behind, not waited for.
            background = (source_task, renew_task, cancel_task, alerts_task, deletions_task)
            for task in background:
                task.cancel()
            await asyncio.wait(background, timeout=self._left(0.5, until=0.97))
            server.close()
            await self._bounded(server.wait_closed(), 0.2)
            await self._bounded(self.dispatcher.senders.aclose(), 0.5)
            await self._bounded(self.dispatcher.recorder.aclose(), 0.2)
            await self._bounded(self.alerts.aclose(), 0.5)
            self.deletions.close()
            await self._bounded(self.presence.close(), 0.5)
            await self._bounded(self.db.close(), 0.5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            log.info("worker stopped", extra={"worker_id": self.settings.worker_id})

    async def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                timeout = await self._claim_ready()
                failures = 0
            except psycopg.OperationalError as error:
                failures += 1
                self.metrics.db_errors.inc()
                self.metrics.db_up.set(0)
                timeout = DB_RETRY.delay(failures)
                log.warning(
                    "database unavailable; retrying",
                    extra={"error": str(error).strip(), "retry_in_s": round(timeout, 2)},
                )
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_ready(self) -> float:
        """Claim and dispatch everything ready; return how long to sleep before looking again."""
        settings = self.settings
        await self.presence.ensure()
        while not self._stop.is_set():
            room = settings.max_in_flight - self.in_flight
            if room <= 0:
                return settings.poll_interval_s  # a finishing batch wakes us sooner
            limit = min(settings.batch_size, room)
            rows = await self.dispatcher.claim(limit, settings.claim_ahead_s)
            self._db_ok()
            if rows:
                task = asyncio.create_task(self.dispatcher.run_batch(rows))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
                task.add_done_callback(_log_crash)
            if len(rows) < limit:
                break
        # Sleep until the next row comes within the claim-ahead horizon, the next lease runs
        # out or the next ring window ends (by the database's clock), but never past the poll
        # interval, nor past the next look at a live peer's rows.
        work = await self.db.next_work_at()
        self._db_ok()
        waits = [settings.poll_interval_s]
        until_send = work.seconds_until(settings.claim_ahead_s)
        if until_send is not None:
            waits.append(max(until_send, MIN_IDLE_S))
        until_ring = await self._ring_windows_ended(work)
        if until_ring is not None:
            waits.append(until_ring)
        if work.peer_leases:
            waits.append(PEER_CHECK_S)
        return min(waits)

    async def _ring_windows_ended(self, work: NextWork) -> float | None:
        """Run phase 2 once the earliest ring window has ended; how long until it is next
        worth looking (None: nothing to wait for)."""
        until_ring = work.seconds_until_ring_end()
        if until_ring is None or work.ring_ends_at == self._phase2_for:
            return None  # phase 2 ran for this very window and left it: not ours to chase
        since = self.clock() - self._phase2_at
        if until_ring > 0 or since < PHASE2_MIN_GAP_S:
            return max(until_ring, PHASE2_MIN_GAP_S - since, MIN_IDLE_S)
        self._phase2_at = self.clock()
        self._phase2_for = work.ring_ends_at
        try:
            released = await self.db.run_phase2()
        except psycopg.OperationalError:
            raise  # the loop backs off
        except psycopg.Error as error:  # phase 2 is not the worker's: never stop the sends
            log.warning("phase 2 failed", extra={"error": str(error).strip()})
            return None
        log.debug("ran phase 2 for an ended ring window", extra={"released": released})
        return MIN_IDLE_S  # look again: retries may be due, the next window may have ended

    async def _alerts(self) -> None:
        """The alert outbox, once this process holds its presence lock (the call loop takes
        it first): rows it claims are then tied to the lock, so a crash returns them at once."""
        while not self.presence.held and not self._stop.is_set():
            await asyncio.sleep(0.05)
        await self.alerts.run()

    async def _deletions(self) -> None:
        """Provider deletions, once the presence lock is held (as the alerts)."""
        while not self.presence.held and not self._stop.is_set():
            await asyncio.sleep(0.05)
        await self.deletions.run()

    def _db_ok(self) -> None:
        self._last_db_ok = self.clock()
        self.metrics.db_up.set(1)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.dispatcher.renew_leases()
                await self.alerts.renew_leases()
            except psycopg.OperationalError as error:
                self.metrics.db_errors.inc()
                log.warning("could not renew leases", extra={"error": str(error).strip()})

    def _left(self, at_most: float, *, until: float = 1.0) -> float:
        """Seconds left until `until` (a fraction of the shutdown grace after the stop
        began), at most `at_most`; never negative."""
        if self._stop_at is None:
            return at_most
        used = time.monotonic() - self._stop_at
        return max(0.0, min(at_most, self.settings.shutdown_grace_s * until - used))

    async def _bounded(
        self, work: Awaitable[T], at_most: float, *, until: float = 0.97
    ) -> T | None:
        """Await `work` for at most `at_most` seconds, and not past `until` of the grace; give
        up (None) rather than wait for a task that does not end when it is cancelled."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self._left(at_most, until=until))
        if not done:
            task.cancel()
            return None
        return task.result()

    async def _shutdown(self) -> None:
        """Finish running sends (bounded), then give back every row this worker holds.

        The grace is shared out: running sends until the reserve (the last FINISH_RESERVE_S,
        at most half of it) begins; recording their results until the middle of the reserve;
        giving rows back until 90 % of it is used; closing connections in what is left.
        """
        self.dispatcher.stop()
        # No new deletion claims; the alerts' release below gives back any row it holds.
        self.deletions.stop()
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        grace = self.settings.shutdown_grace_s
        reserve = min(FINISH_RESERVE_S, grace / 2) / grace if grace else 0.0
        # The last tenth of the reserve is for closing connections and the loop itself.
        sends_until, record_until, release_until = 1 - reserve, 1 - reserve / 2, 1 - reserve / 4
        # The alert outbox stops beside the calls, within the same shares of the grace.
        alerts = asyncio.ensure_future(self.alerts.shutdown(self._left(grace, until=sends_until)))
        try:
            await self._shutdown_calls(grace, sends_until, record_until, release_until)
        finally:
            await self._bounded(alerts, grace, until=release_until)

    async def _shutdown_calls(
        self, grace: float, sends_until: float, record_until: float, release_until: float
    ) -> None:
        """The calls' part of the stop: running sends, their results, then the rows held."""
        batches = list(self._batches)
        if batches:
            _, pending = await asyncio.wait(batches, timeout=self._left(grace, until=sends_until))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("sends cut off by the stop", extra={"batches": len(pending)})
                await asyncio.wait(pending, timeout=self._left(0.1, until=record_until))
        # Results of finished sends still on their way: record them before giving rows back,
        # or a push that rang would be sent again.
        await self._bounded(self.dispatcher.recorder.flushed(), grace, until=record_until)
        try:
            releasing = asyncio.ensure_future(self.db.release())
            done, _ = await asyncio.wait(
                {releasing}, timeout=self._left(grace, until=release_until)
            )
            if not done:
                releasing.cancel()
                raise TimeoutError("the database did not answer in time")
            released = releasing.result()
        except (psycopg.OperationalError, TimeoutError) as error:
            log.warning(
                "could not give back claimed rows; their leases will run out",
                extra={"error": str(error)},
            )
            return
        if released:
            self.metrics.released.inc(len(released))
            log.info("gave back unsent rows", extra={"rows": len(released)})

    # -- /healthz and /metrics ------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, object]]:
        age = self.clock() - self._last_db_ok
        ok = not self._stop.is_set() and self._last_db_ok > 0 and age < HEALTH_STALE_S
        return ok, {
            "status": "ok" if ok else ("stopping" if self._stop.is_set() else "unhealthy"),
            "worker_id": self.settings.worker_id,
            "lease_owner": self.owner,
            "wakeup": self.source.name,
            "claim_ahead_s": self.settings.claim_ahead_s,
            "wakeup_connected": self._source_connected,
            "in_flight": self.in_flight,
            "last_db_ok_s_ago": round(age, 3) if self._last_db_ok else None,
        }

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = request.split(b"\r\n", 1)[0].split()
            path = parts[1].decode() if len(parts) >= 2 else ""
            method = parts[0].decode() if parts else ""
            if method not in ("GET", "HEAD"):
                status, kind, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/healthz":
                ok, details = self.health()
                status, kind = (200 if ok else 503), "application/json"
                body = json.dumps(details).encode()
            elif path == "/metrics":
                await self._refresh_queue_gauge()
                status, kind, body = 200, "text/plain; version=0.0.4", self.metrics.render()
            else:
                status, kind, body = 404, "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _refresh_queue_gauge(self) -> None:
        try:
            depth = await asyncio.wait_for(self.db.queue_depth(), 1.0)
        except (psycopg.OperationalError, TimeoutError):
            self.metrics.db_up.set(0)
            return
        for status, rows in depth.items():
            self.metrics.queue_rows.labels(status).set(rows)
        try:
            outbox = await asyncio.wait_for(self.db.rows("outbox_depth", {}), 1.0)
        except (psycopg.OperationalError, TimeoutError):
            return
        for row in outbox:
            self.metrics.outbox_rows.labels(row["kind"], row["channel"] or "", row["status"]).set(
                row["rows"]
            )


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a batch crashed; its leases will run out", exc_info=task.exception())


def run_until_stopped(main: Coroutine[object, object, None]) -> None:
    """`asyncio.run` without its unbounded wait at the end.

    asyncio.run cancels every task left and waits for each to finish, then joins the default
    executor's threads. A task that does not end when cancelled (psycopg cancelling a query
    on a database that no longer answers) or a thread stuck on a silent peer would hold the
    process after the worker's own stop is done; here they get LEFTOVER_S, then the loop
    closes without them.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=LEFTOVER_S))
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def run_worker(settings: WorkerSettings) -> None:
    """Build the worker from settings and the FCM_* / APNS_* / VAPID_* / SMTP_* / TWILIO_*
    variables, run until SIGTERM."""
    worker = Worker(
        settings,
        build_senders(),
        wakeup_source(settings),
        notifiers=Notifiers.from_env(settings.public_api_url),
    )
    await worker.run()
