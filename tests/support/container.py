"""The image, built and run for real with podman, for tests/e2e/test_container.py.

Everything this machine needs and a user's machine does not lives here, never in the
Dockerfile or compose.yaml:
- podman's own configuration under `.callpanion/containers/` (its storage, so the layer
  cache survives between runs): runc, because crun refuses this machine's hybrid cgroups;
  explicit nofile/nproc limits, because raising them is not permitted here;
- a local stand-in for `python:3.11-slim-bookworm` when the base cannot be pulled (no
  registry here): made by mmdebstrap from Debian's own packages (python3, python3-venv,
  python-is-python3, ca-certificates), with the host's CA bundle and a pip.conf pointing at
  it, so pip inside the build trusts what the host trusts. Cached as `base.tar`.
- `--network host`: the test cluster and the emulators listen on the host's loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.stack.settings import default_stack_root

BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE = "localhost/callpanion:test"
ROOT = default_stack_root(DEFAULT_PROJECT_DIR) / "containers"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
STAND_IN_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"


@dataclass
class Timings:
    """Seconds spent on each set-up step (0 when a cache made it unnecessary)."""

    base_s: float = 0.0
    build_s: float = 0.0


def podman_env() -> dict[str, str]:
    """podman's environment: this project's configuration and storage, not the machine's."""
    ROOT.mkdir(parents=True, exist_ok=True)
    conf = ROOT / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    storage = ROOT / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{ROOT / "storage"}"\n'
        f'runroot = "{ROOT / "run"}"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run podman with this project's configuration; raise with its output on failure."""
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def ensure_base() -> float:
    """The base image in local storage: already there, or imported from the cached stand-in,
    or made by mmdebstrap (about a minute or more, once). Returns seconds spent."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return 0.0
    started = time.monotonic()
    tar = ROOT / "base.tar"
    if not tar.is_file():
        # mmdebstrap picks its output format by the name's extension: this one must end in
        # .tar, or it writes a directory. A partial left by an interrupted run is made anew.
        partial = ROOT / "base.partial.tar"
        for stale in (partial, tar, ROOT / "base.tar.partial"):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={STAND_IN_PACKAGES}",
             f'--customize-hook=cp {bundle} "$1{bundle}"',
             '--customize-hook=printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n"'
             ' > "$1/etc/pip.conf"',
             '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
             "bookworm", str(partial)],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        partial.rename(tar)
    podman("import", "--change", 'CMD ["python3"]', str(tar), BASE_IMAGE)
    return time.monotonic() - started


def build_image() -> Timings:
    """The real Dockerfile, built as a user would (`--format docker` keeps its HEALTHCHECK)."""
    if shutil.which("podman") is None:
        raise AssertionError("podman is missing: run `make os-packages`")
    timings = Timings(base_s=ensure_base())
    started = time.monotonic()
    podman("build", "--format", "docker", "--network", "host", "-t", IMAGE,
           str(DEFAULT_PROJECT_DIR), timeout=1200)  # fmt: skip
    timings.build_s = time.monotonic() - started
    return timings


def image_size_mb() -> float:
    out = podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout
    return int(out.strip()) / 1e6
