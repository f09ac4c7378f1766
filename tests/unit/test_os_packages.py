"""`make`'s OS-package step waits for a busy apt/dpkg lock instead of failing."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAIT = ROOT / "scripts" / "wait-for-apt-lock.sh"


def _start(locks: list[Path], timeout: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "CALLPANION_APT_LOCKS": " ".join(map(str, locks)),
        "CALLPANION_APT_LOCK_TIMEOUT": timeout,
    }
    return subprocess.Popen(
        [str(WAIT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _hold(path: Path) -> int:
    """Take the lock as apt does (a POSIX record lock); close the fd to release it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_it_waits_while_another_process_holds_the_lock_then_goes_on(tmp_path: Path) -> None:
    frontend, lists = tmp_path / "lock-frontend", tmp_path / "lists-lock"
    lists.touch()
    # The lock must be held by another process (our own locks never conflict with us).
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
         " fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(frontend)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert holder.stdout.readline() == "held\n"
    waiter = _start([frontend, lists, tmp_path / "absent"], "120")
    try:
        assert waiter.stdout is not None
        line = waiter.stdout.readline()
        assert line == f"waiting for {frontend}: another apt/dpkg process holds it (up to 120 s)\n"
        assert waiter.poll() is None  # still waiting
        holder.stdin.close()  # the other apt finishes
        holder.wait(10)
        assert waiter.wait(30) == 0
    finally:
        holder.kill()
        waiter.kill()
        holder.wait()
        waiter.wait()


def test_it_gives_up_after_the_timeout_naming_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
         " fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    try:
        waiter = _start([lock], "0")
        _, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 1
        assert err == f"error: {lock} still locked after 0 s; let the other apt/dpkg process " \
            "finish, then run make again\n"  # fmt: skip
    finally:
        holder.kill()
        holder.wait()


def test_the_package_step_waits_before_apt_get() -> None:
    script = (ROOT / "scripts" / "ensure-os-packages.sh").read_text()
    assert script.index("wait-for-apt-lock.sh") < script.index("apt-get -o")
    assert script.count("DPkg::Lock::Timeout") == 2
