"""The demo's background services: emulators, API, worker and phones as separate processes.

Each runs as `python -m python_worker …` in its own session (so it outlives the demo command),
logs to `<stack root>/demo/logs/<name>.log` and leaves its pid in `<stack root>/demo/run/`.
`stop_services` (run by `make stop`) stops exactly those processes: a pid is only signalled
while its command line is still ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from python_worker.errors import CallPanionError

#: How long a service may take to become ready before the demo gives up on it.
START_TIMEOUT_S = 60.0
#: How long a service may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class DemoDirs:
    """Where the demo keeps its logs, pid files, emulator credentials and phone state."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def emulators(self) -> Path:
        return self.root / "emulators"

    @property
    def phones(self) -> Path:
        return self.root / "phones"

    @property
    def env_file(self) -> Path:
        return self.emulators / "emulators.env"


@dataclass
class Service:
    """One started background process."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise CallPanionError(
                f"the {self.name} exited with code {self.process.returncode}; "
                f"its log ({self.log_file}) ends with:\n{tail}"
            )


def _ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"python_worker" in cmdline


def stop_services(dirs: DemoDirs) -> list[str]:
    """SIGTERM every demo process still running (SIGKILL after a grace); the names stopped."""
    stopped: list[str] = []
    if not dirs.run.is_dir():
        return stopped
    waiting: list[tuple[str, int, Path]] = []
    for pid_file in sorted(dirs.run.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid_file.unlink(missing_ok=True)
            continue
        if _ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                waiting.append((pid_file.stem, pid, pid_file))
        else:
            pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, pid, pid_file in waiting:
        while _ours(pid) and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _ours(pid) and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        stopped.append(name)
    return stopped


def _alive(pid: int) -> bool:
    # A stopped child of ours stays a zombie until reaped; count that as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_service(
    dirs: DemoDirs, name: str, args: Sequence[str], env: dict[str, str], cwd: Path
) -> Service:
    """Start `python -m python_worker <args>` in the background, logging to its file."""
    dirs.logs.mkdir(parents=True, exist_ok=True)
    dirs.run.mkdir(parents=True, exist_ok=True)
    log_file = dirs.logs / f"{name}.log"
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "python_worker", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # keeps running after `callpanion demo` returns
        )
    (dirs.run / f"{name}.pid").write_text(f"{process.pid}\n")
    return Service(name, process, log_file)


def require_free_port(port: int, setting: str) -> None:
    """Refuse early, naming the setting, when something already listens on the port."""
    with socket.socket() as probe:
        # As the servers bind: connections of an earlier run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise CallPanionError(
                f"{setting}: port {port} is in use on 127.0.0.1; stop what uses it "
                f"(`make stop` stops an earlier demo) or set {setting} to another port"
            ) from None


def wait_until(
    what: str, ready: Callable[[], bool], service: Service, timeout: float = START_TIMEOUT_S
) -> None:
    """Wait for `ready()` to be true while the service lives; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not ready():
        service.check_alive()
        if time.monotonic() > deadline:
            raise CallPanionError(f"{what} was not ready after {timeout:g} s ({service.log_file})")
        time.sleep(0.1)


def http_ok(url: str) -> bool:
    """Whether GET url answers 200 (no proxies: these are loopback services)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
