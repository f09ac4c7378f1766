"""The package's shape is enforced: imports flow programs -> capabilities -> shared modules.

The contracts live in `.importlinter`; this runs them (as `make lint` does) and proves they
bite by adding one forbidden import to a copy of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "python_worker",
        tmp_path / "python_worker",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path / "python_worker"


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "contract"),
    [
        # a program importing a sibling program
        ("api/app.py", "from python_worker.worker import loop", "programs use capabilities"),
        ("worker/loop.py", "from python_worker.api import app", "programs use capabilities"),
        # a capability importing a program
        ("push/fcm.py", "from python_worker.worker import metrics", "programs use capabilities"),
        # an emulator importing a program
        ("emulators/fcm.py", "from python_worker.api import db", "import nothing from the"),
        # a capability importing the command line
        ("push/apns.py", "from python_worker.cli import stack", "programs use capabilities"),
        # a shared module importing a capability
        ("errors.py", "from python_worker.stack import cluster", "programs use capabilities"),
    ],
)
def test_a_forbidden_import_breaks_the_build(
    tmp_path: Path, module: str, forbidden: str, contract: str
) -> None:
    package = _copy_package(tmp_path)
    target = package / module
    target.write_text(target.read_text() + f"\n{forbidden}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert contract in result.stdout
    # the copy was analysed, not the installed package
    assert forbidden.split()[1] in result.stdout
