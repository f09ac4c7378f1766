"""The worker's Prometheus metrics, on a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Lateness (send_at to the provider request) buckets: the goal is p99 under a second.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Everything the worker counts. One instance per worker process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_rows = Gauge(
            "callpanion_queue_rows",
            "Live notification_queue rows by status (read on each scrape)",
            ["status"],
            registry=r,
        )
        self.db_up = Gauge(
            "callpanion_db_up", "1 when the last database call succeeded", registry=r
        )
        self.pushes = Counter(
            "callpanion_pushes_total",
            "Pushes sent, by provider and classified outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.results = Counter(
            "callpanion_push_results_total",
            "Recorded results: sent, retry, fallback, failed, expired, lost_lease",
            ["result"],
            registry=r,
        )
        self.lateness = Histogram(
            "callpanion_push_lateness_seconds",
            "From a row's send_at (or next attempt) to its provider request",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "callpanion_retries_total", "Pushes that will be tried again", registry=r
        )
        self.tokens_invalidated = Counter(
            "callpanion_tokens_invalidated_total",
            "Device tokens a provider declared dead",
            ["provider"],
            registry=r,
        )
        self.claimed = Counter(
            "callpanion_claimed_rows_total", "Queue rows claimed by this worker", registry=r
        )
        self.released = Counter(
            "callpanion_released_rows_total", "Claimed rows given back unsent", registry=r
        )
        self.db_seconds = Counter(
            "callpanion_db_seconds_total",
            "Time spent waiting for the database, by call (claim, record): divided by the rows"
            " claimed, the cost per call that `bench dispatch` prints",
            ["call"],
            registry=r,
        )
        self.leases_lost = Counter(
            "callpanion_leases_lost_total",
            "Claimed rows not sent because this worker no longer held their lease (a renewal"
            " did not return them, or the lease ran out by the worker's clock)",
            registry=r,
        )
        self.in_flight = Gauge("callpanion_in_flight", "Claimed rows not yet recorded", registry=r)
        self.wakeups = Counter(
            "callpanion_wakeups_total", "Hints received from the wake-up source", registry=r
        )
        self.db_errors = Counter(
            "callpanion_db_errors_total",
            "Database calls that failed (and were retried)",
            registry=r,
        )

        self.outbox_claimed = Counter(
            "callpanion_outbox_claimed_rows_total",
            "Family-alert outbox rows claimed by this worker",
            registry=r,
        )
        self.outbox_messages = Counter(
            "callpanion_alert_messages_total",
            "Alert messages sent, by channel and classified outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.outbox_results = Counter(
            "callpanion_alert_results_total",
            "Recorded alert results: sent, retry, failed, disabled, lost_lease",
            ["result"],
            registry=r,
        )
        self.outbox_lateness = Histogram(
            "callpanion_alert_lateness_seconds",
            "From an outbox row's send time (or retry time) to its provider request",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.outbox_rows = Gauge(
            "callpanion_outbox_rows",
            "Live outbox rows by kind, channel and status (read on each scrape)",
            ["kind", "channel", "status"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
