#!/usr/bin/env bash
# Wait while another process (unattended-upgrades, another apt-get) holds apt's or dpkg's
# locks, instead of failing with "Could not get lock". apt and dpkg take POSIX record locks
# (fcntl), so the probe takes the same kind of lock, without blocking, and lets it go at once.
# CALLPANION_APT_LOCK_TIMEOUT (seconds, default 600) bounds the wait; CALLPANION_APT_LOCKS
# (space separated) replaces the list of lock files.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" - <<'PY'
import fcntl
import os
import sys
import time

DEFAULT = "/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock"
locks = os.environ.get("CALLPANION_APT_LOCKS", DEFAULT).split()
raw = os.environ.get("CALLPANION_APT_LOCK_TIMEOUT", "600")
try:
    timeout = float(raw)
except ValueError:
    sys.exit(f"error: CALLPANION_APT_LOCK_TIMEOUT must be a number of seconds, got {raw!r}")


def held(path):
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases our probe lock
    return False


deadline = time.monotonic() + timeout
announced = set()
while True:
    busy = [path for path in locks if held(path)]
    if not busy:
        sys.exit(0)
    for path in busy:
        if path not in announced:
            announced.add(path)
            print(f"waiting for {path}: another apt/dpkg process holds it "
                  f"(up to {timeout:g} s)", flush=True)
    if time.monotonic() >= deadline:
        sys.exit(f"error: {' '.join(busy)} still locked after {timeout:g} s; "
                 "let the other apt/dpkg process finish, then run make again")
    time.sleep(1)  # waiting on another program, which tells us nothing when it is done
PY
