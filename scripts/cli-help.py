"""Print `callpanion --help` and every subcommand's help, for diffing the CLI before and after
a change: `.venv/bin/python scripts/cli-help.py > before.txt`."""

from __future__ import annotations

import argparse
import contextlib
import io
import os

os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width

from python_worker.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser, depth first, in registration order."""
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(commands(sub, (*path, name)))
    return found


for path in commands(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*path, "--help"])
    print(f"===== callpanion {' '.join(path)} --help")
    print(out.getvalue())
