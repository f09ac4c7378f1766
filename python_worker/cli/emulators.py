"""`callpanion emulators`: FCM (+OAuth), APNs and ElevenLabs stand-ins until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import functools
from pathlib import Path
from typing import Any

from python_worker.cli.webhook import WEBHOOK_PATH
from python_worker.stack.settings import stack_settings
from python_worker.worker.settings import worker_settings


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `emulators`."""
    emulators = sub.add_parser(
        "emulators", help="run the FCM (+OAuth), APNs and ElevenLabs emulators until interrupted"
    )
    emulators.add_argument("--fast", action="store_true", help="skip verification (benchmarks)")
    emulators.add_argument("--dir", help="where to write the generated credentials")
    emulators.add_argument("--fcm-port", type=int, default=0, help="default: a free port")
    emulators.add_argument("--apns-port", type=int, default=0, help="default: a free port")
    emulators.add_argument("--elevenlabs-port", type=int, default=0, help="default: a free port")
    emulators.add_argument(
        "--webhook-url",
        help="where conversations' post-call webhooks go "
        "(default: CALLPANION_PUBLIC_API_URL + /v1/webhooks/elevenlabs)",
    )
    emulators.add_argument(
        "--env-file",
        dest="write_env_file",
        help="where to write their settings (default: <dir>/emulators.env)",
    )
    emulators.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    emulators.set_defaults(func=cmd_emulators)


def cmd_emulators(args: argparse.Namespace) -> int:
    """Serve the emulators, writing their credentials and settings file."""
    from python_worker.emulators.suite import serve

    folder = Path(args.dir) if args.dir else stack_settings().stack_dir.parent / "emulators"
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        serve(
            folder,
            fast=args.fast,
            fcm_port=args.fcm_port,
            apns_port=args.apns_port,
            elevenlabs_port=args.elevenlabs_port,
            webhook_url=args.webhook_url or f"{worker_settings().public_api_url}{WEBHOOK_PATH}",
            twilio_inbound_url=f"{worker_settings().public_api_url}/v1/webhooks/twilio/sms",
            env_file=Path(args.write_env_file) if args.write_env_file else None,
            as_json=args.json,
            announce=functools.partial(print, flush=True),
        )
    )
    return 0
