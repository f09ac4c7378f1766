"""`callpanion phone`: run a phone simulator, or act for the person holding one."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from python_worker.errors import CallPanionError
from python_worker.stack.settings import stack_settings
from python_worker.worker.settings import DEFAULT_PUBLIC_API_URL


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `phone run|answer|decline|state`."""
    phone = sub.add_parser("phone", help="the phone simulator: run one, or answer it by hand")
    phone_sub = phone.add_subparsers(dest="action", required=True)
    phone_run = phone_sub.add_parser("run", help="pair with a code and ring until stopped")
    phone_run.add_argument("--name", required=True, help="a short name (state file, output)")
    phone_run.add_argument("--platform", required=True, choices=("ios", "android"))
    pairing = phone_run.add_mutually_exclusive_group(required=True)
    pairing.add_argument("--pairing-id", help="the pairing id (the dashboard's QR code or link)")
    pairing.add_argument(
        "--pairing-reference", help="the reference shown beside the code (typed pairing)"
    )
    phone_run.add_argument("--code", required=True, help="the 6-digit pairing code")
    phone_run.add_argument(
        "--api", default=DEFAULT_PUBLIC_API_URL, help=f"the API (default {DEFAULT_PUBLIC_API_URL})"
    )
    phone_run.add_argument(
        "--script",
        default="manual",
        help="per call, in order: answer:N, decline, ignore, manual, offline (default manual)",
    )
    phone_run.add_argument("--control-port", type=int, default=0, help="default: a free port")
    phone_run.add_argument(
        "--app-state",
        default="background",
        choices=("foreground", "background", "terminated"),
        help="where the app is when an FCM push comes: each is its own path with its own"
        " checks (default background)",
    )
    for action, text in (
        ("answer", "answer the call ringing for a person"),
        ("decline", "decline the call ringing for a person"),
        ("state", "print each running phone's state"),
    ):
        person = phone_sub.add_parser(action, help=text)
        person.add_argument("--name", help="only this phone (default: any that rings)")
        person.add_argument("--state-dir", help="default: <stack root>/demo/phones")
    phone_run.add_argument("--state-dir", help="default: <stack root>/demo/phones")
    phone.set_defaults(func=cmd_phone)


def _state_dir(args: argparse.Namespace) -> Path:
    from python_worker.demo import play

    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    return play.settings_dirs(stack_settings()).phones


def cmd_phone(args: argparse.Namespace) -> int:
    """`phone run` rings until stopped; `answer`/`decline`/`state` talk to running phones."""
    from python_worker.phone import control

    state_dir = _state_dir(args)
    if args.action == "run":
        from python_worker.phone.script import parse_script
        from python_worker.phone.settings import phone_settings
        from python_worker.phone.simulator import Phone, run_phone

        try:
            script = parse_script(args.script)
        except ValueError as error:
            raise CallPanionError(f"--script: {error}") from None
        endpoints = phone_settings().endpoints(args.api)
        phone = Phone(
            args.name,
            args.platform,
            endpoints,
            script,
            state_dir=state_dir,
            control_port=args.control_port,
            app_state=args.app_state,
        )
        asyncio.run(run_phone(phone, args.pairing_id, args.code, args.pairing_reference))
        return 0
    states = control.running_phones(state_dir, args.name)
    if args.action == "state":
        for state in states:
            print(json.dumps(control.control_request(state["control"])))
        return 0
    name, call_id = control.act_for_person(states, args.action)
    print(f"{name}: {args.action} {call_id}")
    return 0
