"""`callpanion`: the command line of the CallPanion backend."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import load_dotenv

from python_worker.cli import (
    bench,
    demo,
    emulators,
    healthcheck,
    phone,
    schema,
    serve,
    sql,
    stack,
    webhook,
)
from python_worker.cli.settings import cli_settings
from python_worker.config import load_env
from python_worker.errors import CallPanionError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command group registers its own commands, in this order."""
    parser = argparse.ArgumentParser(prog="callpanion", description=__doc__)
    parser.add_argument(
        "--env-file",
        dest="read_env_file",
        help="read settings from this dotenv file too (the environment wins over it, it wins "
        "over ./.env); default: $CALLPANION_ENV_FILE, e.g. the emulators' settings file",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for configure in (
        stack.configure,
        demo.configure,
        schema.configure,
        phone.configure,
        webhook.configure,
        sql.configure,
        emulators.configure,
        bench.configure,
        serve.configure_api,
        serve.configure_worker,
        healthcheck.configure,
    ):
        configure(sub)
    return parser


def load_settings_files(env_file: str | None) -> None:
    """The environment wins; then the explicit settings file (the emulators'); then ./.env."""
    if env_file:
        path = Path(env_file)
        if not path.is_file():
            raise CallPanionError(
                f"--env-file: no such file: {path} (are the emulators running? "
                "`callpanion emulators` writes it)"
            )
        load_dotenv(path, override=False)
    load_env()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `callpanion` console script."""
    args = build_parser().parse_args(argv)
    try:
        load_settings_files(args.read_env_file or cli_settings().env_file)
        code: int = args.func(args)
    except CallPanionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
