"""The API's Prometheus metrics, served at `GET /metrics` (not in the OpenAPI document).

Requests are counted by route template (`/v1/calls/{session_id}/events`, never the concrete
path, so an id never becomes a label value) and status; unmatched paths count as `unmatched`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

#: Request durations from a few milliseconds (health checks) to the webhook's slowest.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """One app's counters, in a registry of its own (tests serve several apps at once)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "callpanion_api_requests_total",
            "HTTP requests answered, by route template and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "callpanion_api_request_seconds",
            "Time to answer a request, by route template",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )


def install(app: FastAPI) -> ApiMetrics:
    """Count every request of `app` and serve the counts at `GET /metrics`."""
    metrics = ApiMetrics()

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.duration.labels(route).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
