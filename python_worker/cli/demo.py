"""`callpanion demo`: the whole product on this machine (python_worker/demo does the work)."""

from __future__ import annotations

import argparse
from typing import Any

from python_worker.api.settings import api_settings
from python_worker.worker.settings import worker_settings


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `demo`."""
    demo = sub.add_parser(
        "demo", help="play a whole call: stack, emulators, API, worker, simulated phones"
    )
    demo.add_argument(
        "action", nargs="?", choices=("play", "stack", "stop"), default="play",
        help="play the calls (default); stack: only bring up the stack and its demo data, "
        "and report it; stop: stop the demo's background services",
    )  # fmt: skip
    demo.add_argument(
        "--json", action="store_true", help="end with one JSON line summarising both calls"
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """`demo [play|stack|stop]`."""
    from python_worker.demo import console, play

    if args.action == "stop":
        return console.stop()
    if args.action == "stack":
        return console.stack_only(args.json)
    ports = play.DemoPorts(api=api_settings().port, worker_http=worker_settings().http_port)
    return console.play_calls(ports, args.json)
