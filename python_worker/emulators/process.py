"""The emulators in a child process, for the benchmarks, and their admin routes from outside.

A child process (`callpanion emulators --fast --json`) does not share the interpreter lock of
whatever it measures; the admin routes (`/_emulator/...`, see admin.py) are reached over the
same TLS port as the provider's API.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from python_worker.errors import CallPanionError


@contextlib.contextmanager
def emulator_process(folder: Path, *, fast: bool = True) -> Iterator[dict[str, str]]:
    """`callpanion emulators [--fast] --json` in a child process; yields its endpoints (the
    environment variables that point a worker at it). Stopped on exit, whatever happened.
    Without `fast` they verify every request and honour injected faults (chaos runs)."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "python_worker",
            "emulators",
            *(["--fast"] if fast else []),
            "--json",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            error = child.stderr.read() if child.stderr else ""
            raise CallPanionError(f"the emulators did not start: {error.strip()}")
        yield json.loads(line)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def admin_request(
    base_url: str,
    ca_file: str,
    method: str,
    path: str,
    timeout: float = 30.0,
    body: dict[str, object] | None = None,
) -> dict[str, object]:
    """One admin call (`GET /_emulator/deliveries`, `POST /_emulator/faults` with a JSON
    `body`, ...): its JSON."""
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(  # noqa: S310 (https to our emulator)
        f"{base_url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={} if body is None else {"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=timeout) as response:  # noqa: S310
        result: dict[str, object] = json.loads(response.read())
        return result
