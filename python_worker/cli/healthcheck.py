"""`callpanion healthcheck`: the container's HEALTHCHECK, a probe of the worker's /healthz."""

from __future__ import annotations

import argparse
from typing import Any

from python_worker.worker.healthcheck import default_healthz_url, probe
from python_worker.worker.settings import worker_settings

#: `callpanion healthcheck` gives up after this long (the container's HEALTHCHECK allows 5 s).
HEALTHCHECK_TIMEOUT_S = 3.0


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `healthcheck`."""
    healthcheck = sub.add_parser(
        "healthcheck",
        help="GET the worker's /healthz: exit 0 on 200, 1 otherwise (the container HEALTHCHECK)",
    )
    healthcheck.add_argument(
        "--url",
        help="default: http://CALLPANION_WORKER_HTTP_HOST:CALLPANION_WORKER_HTTP_PORT/healthz "
        "(127.0.0.1 when the host is 0.0.0.0)",
    )
    healthcheck.set_defaults(func=cmd_healthcheck)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz: exit 0 on 200, 1 on anything else; print one line either way."""
    if args.url:
        url: str = args.url
    else:
        settings = worker_settings()
        url = default_healthz_url(settings.http_host, settings.http_port)
    healthy, line = probe(url, HEALTHCHECK_TIMEOUT_S)
    print(line)
    return 0 if healthy else 1
