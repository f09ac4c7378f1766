"""What `pip install .` (the container image) installs: the whole package, not only `.py` files.

The named queries (`*_queries.sql`) are read next to the modules, so a wheel without them
gives a worker that cannot start. setuptools' `build_py` is the step that decides what goes
into the wheel; it is run here on a copy of the sources.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "python_worker"


def _package_files(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in (root / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_built_package_holds_every_module_and_query_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / PACKAGE, source / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    build_lib = tmp_path / "lib"
    setup = "from setuptools import setup; setup()"
    subprocess.run(
        [sys.executable, "-c", setup, "build_py", "--build-lib", str(build_lib)],
        cwd=source,
        check=True,
        capture_output=True,
    )

    expected = _package_files(ROOT)
    assert {f"{PACKAGE}/worker_queries.sql", f"{PACKAGE}/emulators/suite.py"} <= expected
    missing = expected - _package_files(build_lib)
    assert not missing, f"not in the wheel: {sorted(missing)} (see [tool.setuptools])"
