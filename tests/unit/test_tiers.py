"""The tests' own layout: three tiers, fixtures in each tier's conftest, helpers in plain modules.

No test imports a conftest (a conftest is pytest's to load, once per tier; importing it runs
its fixtures' module a second time under another name). Every test file lives in a tier, and
every test `make mutate` names exists: its runner drops a missing one silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mutate.sql_mutants import SQL_MUTANTS
from mutate.targets import PYTHON_TARGETS

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TIERS = ("unit", "integration", "e2e")


def conftest_imports(source: str) -> list[str]:
    """The modules named `conftest` (at any depth) that `source` imports."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if "conftest" in a.name.split(".")]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if "conftest" in base.split("."):
                found.append(base)
            else:
                sep = "" if base.endswith(".") else "."
                found += [f"{base}{sep}{a.name}" for a in node.names if a.name == "conftest"]
    return found


def plugin_lists(source: str) -> list[int]:
    """The lines of `source` that assign `pytest_plugins`."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id == "pytest_plugins"
    ]


def test_the_check_sees_every_way_of_importing_a_conftest() -> None:
    assert conftest_imports("from tests.conftest import one") == ["tests.conftest"]
    assert conftest_imports("import tests.integration.conftest as c") == [
        "tests.integration.conftest"
    ]
    assert conftest_imports("from tests.integration import conftest") == [
        "tests.integration.conftest"
    ]
    assert conftest_imports("from . import conftest") == [".conftest"]
    assert conftest_imports("from tests.support.db import one") == []
    assert plugin_lists('x = 1\npytest_plugins = ["tests.support.push"]') == [2]


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS))
)
def test_no_module_of_the_suite_imports_a_conftest(path: Path) -> None:
    source = path.read_text()
    assert conftest_imports(source) == [], f"{path}: import from tests/support instead"
    assert plugin_lists(source) == [], f"{path}: a tier's conftest names its fixtures"


def test_every_test_file_is_in_a_tier_and_every_tier_has_its_conftest() -> None:
    outside = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in TIERS
    ]
    assert outside == []
    assert not (TESTS / "conftest.py").exists()  # a root conftest would load for every tier
    for tier in TIERS:
        assert (TESTS / tier / "conftest.py").is_file(), tier
    for folder in {p.parent for p in TESTS.rglob("*.py")}:
        assert (folder / "__init__.py").is_file(), folder


def test_every_test_make_mutate_names_exists() -> None:
    named = [t for target in PYTHON_TARGETS for t in (*target.unit, *target.integration)]
    named += [t for mutant in SQL_MUTANTS for t in mutant.tests]
    missing = [t for t in named if not (ROOT / t.split("::", 1)[0]).exists()]
    assert missing == []
    for target in PYTHON_TARGETS:
        assert all(t.startswith("tests/unit/") for t in target.unit), target.name
        assert all(t.startswith("tests/integration/") for t in target.integration), target.name
