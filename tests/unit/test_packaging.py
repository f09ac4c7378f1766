"""What `pip install .` (the container image) installs: the whole package, not only `.py` files,
and every distribution its modules import.

The named queries (`*_queries.sql`) are read next to the modules, so a wheel without them
gives a worker that cannot start. setuptools' `build_py` is the step that decides what goes
into the wheel; it is run here on a copy of the sources. The development virtualenv also holds
the `test` extra, so an import that only works thanks to it (`requests`, pulled in by
firebase-admin) goes unnoticed until the image runs: the runtime requirements are checked
against the imports instead.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
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
    assert {f"{PACKAGE}/worker/queries.sql", f"{PACKAGE}/emulators/suite.py"} <= expected
    missing = expected - _package_files(build_lib)
    assert not missing, f"not in the wheel: {sorted(missing)} (see [tool.setuptools])"


def _runtime_distributions() -> set[str]:
    """`[project] dependencies` and everything they require, extras and markers applied."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(line) for line in project["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its imports fail on their own
        for line in requires:
            nested = Requirement(line)
            extras = {"", *requirement.extras}
            if nested.marker and not any(nested.marker.evaluate({"extra": e}) for e in extras):
                continue
            todo.append(nested)
    return {name for name, _ in seen}


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module loads (not inside functions: lazy imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_level_import_is_a_runtime_dependency() -> None:
    runtime = _runtime_distributions()
    providers = metadata.packages_distributions()
    unmet: dict[str, list[str]] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for name in _module_level_imports(path):
            if name in sys.stdlib_module_names or name in (PACKAGE, "__future__"):
                continue
            dists = {canonicalize_name(d) for d in providers.get(name, [])}
            if not dists & runtime:
                unmet.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    assert not unmet, f"imported but not in [project] dependencies (or theirs): {unmet}"
