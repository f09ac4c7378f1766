"""`callpanion api` and `callpanion worker`: the two programs that run in production."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from python_worker.api.settings import api_settings
from python_worker.errors import CallPanionError
from python_worker.push.settings import apns_settings, fcm_settings
from python_worker.worker.settings import worker_settings


def configure_api(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `api`."""
    api_parser = sub.add_parser("api", help="serve the HTTP API (device routes, webhook)")
    api_parser.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI document and exit"
    )
    api_parser.set_defaults(func=cmd_api)


def configure_worker(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `worker`."""
    worker_parser = sub.add_parser(
        "worker", help="send every queued call at its time (until SIGTERM); see README Worker"
    )
    worker_parser.set_defaults(func=cmd_worker)


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API, or print its OpenAPI document."""
    # Imported here: the other commands need neither FastAPI nor uvicorn.
    from python_worker.api import app as api

    settings = api_settings()
    if args.openapi:
        sys.stdout.write(api.openapi_document(settings))
        return 0
    print(f"serving the CallPanion API on http://{settings.host}:{settings.port}")
    api.serve(settings)
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    """Run the worker until SIGTERM; refuse to start with no push provider."""
    from python_worker import logs
    from python_worker.worker import loop as worker

    settings = worker_settings()
    if fcm_settings() is None and apns_settings() is None:
        # Started like this it would claim every due call and fail it: refuse instead.
        raise CallPanionError(
            "no push provider is configured: set FCM_SERVICE_ACCOUNT_FILE (FCM) and/or "
            "APNS_KEY_FILE with APNS_KEY_ID, APNS_TEAM_ID, APNS_BUNDLE_ID (APNs); locally, run "
            "`callpanion emulators` and start the worker with "
            "`callpanion --env-file .callpanion/emulators/emulators.env worker`"
        )
    logs.configure(settings.log_level)
    worker.run_until_stopped(worker.run_worker(settings))
    return 0
