"""`make mutate`: mutation testing of the critical modules (cosmic-ray) and of the SQL invariants.

Everything happens in a throw-away copy of the project under `.callpanion/mutate/`, never in
the working tree: cosmic-ray rewrites the module on disk for each mutant, and a SQL mutant
rewrites a migration. The copy's tests start their own cluster (in the copy's `.callpanion/`),
so a mutated migration is what every test database there is built from.

    python -m mutate                    # every Python target, then every SQL mutant
    python -m mutate --python fcm apns  # some Python targets
    python -m mutate --sql              # only the SQL mutants (--sql NAME ... for some)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mutate.sql_mutants import SQL_MUTANTS, SqlMutant
from mutate.targets import (
    EXCLUDED_OPERATORS,
    PLUGINS_OFF,
    PYTHON_TARGETS,
    UNIT_OPTIONS,
    PythonTarget,
)
from python_worker.stack.cluster import LocalStack
from python_worker.stack.settings import default_stack_root, stack_settings

ROOT = Path(__file__).resolve().parent.parent
#: What a copy leaves out: caches, the virtualenv, clusters and earlier copies.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".callpanion", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis"
)
#: A mutant whose tests run longer than this many times the unmutated run is killed.
TIMEOUT_FACTOR = 4.0
MIN_TIMEOUT_S = 60.0
#: A survivor is explained by a comment on its line or the line above that says why.
EXPLAINED = re.compile(r"#.*equivalent mutant:\s*(?P<why>.*)")


@dataclass
class Score:
    """The outcome of one target."""

    name: str
    killed: int = 0
    survived: list[str] = field(default_factory=list)
    incompetent: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.killed + len(self.survived)

    def line(self) -> str:
        percent = 100.0 * self.killed / self.total if self.total else 100.0
        return (
            f"{self.name:<40} {self.killed:>4}/{self.total:<4} killed  {percent:5.1f}%"
            f"  ({self.incompetent} not runnable, {self.seconds:.0f} s)"
        )


def make_copy(parent: Path) -> Path:
    """A fresh copy of the project to mutate (the working tree, with uncommitted changes)."""
    parent.mkdir(parents=True, exist_ok=True)
    copy = parent / f"copy-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
    return copy


def present(copy: Path, tests: Sequence[str]) -> list[str]:
    """The tests that exist in the copy (a target may name tests written later)."""
    return [t for t in tests if (copy / t.split("::", 1)[0]).exists()]


def pytest_command(tests: Sequence[str], *options: str) -> list[str]:
    """pytest, stopping at the first failure."""
    return [sys.executable, "-m", "pytest", "-x", "-q", *PLUGINS_OFF, *options, *tests]


def target_command(copy: Path, target: PythonTarget) -> list[str]:
    """The unit tier, then (only if it passes) the integration tier, as one command."""
    tiers = []
    if unit := present(copy, target.unit):
        tiers.append(pytest_command(unit, *UNIT_OPTIONS))
    if integration := present(copy, target.integration):
        tiers.append(pytest_command(integration))
    if not tiers:
        raise SystemExit(f"{target.name}: none of its tests exists, nothing could kill a mutant")
    if len(tiers) == 1:
        return tiers[0]
    return ["/bin/sh", "-c", " && ".join(shlex.join(t) for t in tiers)]


def stop_clusters(copy: Path) -> None:
    """Stop any test cluster a killed test run (a timed-out mutant) left behind in the copy."""
    for pid_file in default_stack_root(copy).glob("**/pgdata/postmaster.pid"):
        settings = stack_settings({}).model_copy(update={"stack_dir": pid_file.parent.parent})
        LocalStack(settings).down()


# -- Python targets ------------------------------------------------------------------------


def function_lines(source: str, qualnames: Sequence[str]) -> list[str]:
    """The line ranges ("start-end") of the named functions, for cosmic-ray's line filter."""
    ranges: dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if name in qualnames and not isinstance(child, ast.ClassDef):
                    ranges[name] = f"{child.lineno}-{child.end_lineno}"
                visit(child, f"{name}.")

    visit(ast.parse(source), "")
    missing = set(qualnames) - set(ranges)
    if missing:
        raise SystemExit(f"functions not found: {', '.join(sorted(missing))}")
    return [ranges[q] for q in qualnames]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(copy: Path, target: PythonTarget, timeout: float) -> Path:
    """The cosmic-ray configuration of one target, in the copy."""
    command = shlex.join(target_command(copy, target))
    lines = [
        "[cosmic-ray]",
        f"module-path = {_toml_string(target.path)}",
        f"timeout = {timeout:.0f}",
        "excluded-modules = []",
        f"test-command = {_toml_string(command)}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        "exclude-operators = [" + ", ".join(_toml_string(e) for e in EXCLUDED_OPERATORS) + "]",
    ]
    if target.functions:
        ranges = function_lines((copy / target.path).read_text(), target.functions)
        lines += [
            "",
            "[cosmic-ray.filters.line-filter.lines]",
            f"{_toml_string(target.path)} = [{', '.join(_toml_string(r) for r in ranges)}]",
        ]
    config = copy / f"mutate-{target.name}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the module's type annotations are, as ((line, col), (end line, end col))."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.arg | ast.AnnAssign):
            annotations.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        for a in annotations:
            if a is not None and a.end_lineno is not None and a.end_col_offset is not None:
                spans.append(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)))
    return spans


def skip_annotations(session: Path, source: str) -> None:
    """Skip mutants inside annotations: under `from __future__ import annotations` they are
    never evaluated (`float | None` -> `float & None` is equivalent by construction)."""
    spans = annotation_spans(source)
    with sqlite3.connect(session) as db:
        pending = db.execute(
            "select m.job_id, m.start_pos_row, m.start_pos_col from mutation_specs m"
            " where not exists (select 1 from work_results r where r.job_id = m.job_id)"
        ).fetchall()
        for job_id, row, col in pending:
            if any(start <= (row, col) < end for start, end in spans):
                db.execute(
                    "insert into work_results (worker_outcome, output, job_id)"
                    " values ('SKIPPED', 'Filtered annotation', ?)",
                    [job_id],
                )


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_python_target(copy: Path, target: PythonTarget) -> Score:
    """Init, filter and execute one cosmic-ray session; returns the score."""
    started = time.monotonic()
    session = copy / f"mutate-{target.name}.sqlite"
    session.unlink(missing_ok=True)
    baseline = subprocess.run(target_command(copy, target), cwd=copy, check=False)
    if baseline.returncode != 0:
        raise SystemExit(f"{target.name}: the tests fail without any mutant; fix them first")
    # A mutant that makes the tests hang (a sleep that never ends) is killed after a few
    # times what the unmutated tests took: that is a failure, not a survivor.
    timeout = max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * (time.monotonic() - started))
    config = write_config(copy, target, timeout)
    subprocess.run([_bin("cosmic-ray"), "init", str(config), str(session)], cwd=copy, check=True)
    subprocess.run([_bin("cr-filter-operators"), str(session), str(config)], cwd=copy, check=True)
    subprocess.run([_bin("cr-filter-pragma"), str(session)], cwd=copy, check=True)
    if target.functions:
        subprocess.run(
            [_bin("cr-filter-lines"), "--config", str(config), str(session)], cwd=copy, check=True
        )
    skip_annotations(session, (copy / target.path).read_text())
    try:
        subprocess.run(
            [_bin("cosmic-ray"), "exec", str(config), str(session)], cwd=copy, check=True
        )
    finally:
        stop_clusters(copy)
    score = score_session(copy, target.name, session)
    score.seconds = time.monotonic() - started
    kept = copy.parent / "sessions" / f"{target.name}-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
    kept.parent.mkdir(exist_ok=True)
    shutil.copy(session, kept)
    print(f"session kept in {kept} (--recheck it after adding tests)", flush=True)
    return score


def recheck_python_target(copy: Path, saved: Path) -> Score:
    """Run a kept session's survivors again, against the current tests and code.

    Mutants are found again by operator and occurrence, so this holds as long as the module's
    code (not its comments) is unchanged since the session was made.
    """
    started = time.monotonic()
    name = saved.name.split("-", 1)[0]
    by_name = {t.name: t for t in PYTHON_TARGETS}
    if name not in by_name:
        raise SystemExit(f"{saved}: not a session of a known target")
    target = by_name[name]
    session = copy / f"mutate-{name}.sqlite"
    shutil.copy(saved, session)
    source = (copy / target.path).read_text().splitlines()
    with sqlite3.connect(session) as db:
        survivors = db.execute(
            "select job_id, diff from work_results where test_outcome = 'SURVIVED'"
        ).fetchall()
        for job_id, diff in survivors:
            removed = [d[1:] for d in diff.splitlines() if d.startswith("-") and d[:3] != "---"]
            if removed and removed[0] not in source:
                # The code was simplified and this mutant's site is gone: it no longer counts.
                print(f"  gone (code simplified): {removed[0].strip()}", flush=True)
                for table in ("work_results", "mutation_specs", "work_items"):
                    db.execute(f"delete from {table} where job_id = ?", [job_id])  # noqa: S608
            else:
                db.execute("delete from work_results where job_id = ?", [job_id])
    baseline = subprocess.run(target_command(copy, target), cwd=copy, check=False)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: the tests fail without any mutant; fix them first")
    timeout = max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * (time.monotonic() - started))
    config = write_config(copy, target, timeout)
    try:
        subprocess.run(
            [_bin("cosmic-ray"), "exec", str(config), str(session)], cwd=copy, check=True
        )
    finally:
        stop_clusters(copy)
    score = score_session(copy, name, session)
    score.seconds = time.monotonic() - started
    return score


def score_session(copy: Path, name: str, session: Path) -> Score:
    """Count killed and surviving mutants from `cosmic-ray dump`, each survivor described."""
    dump = subprocess.run(
        [_bin("cosmic-ray"), "dump", str(session)],
        cwd=copy,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    score = Score(name)
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is None or result["worker_outcome"] == "skipped":
            continue
        outcome = result["test_outcome"]
        if outcome == "killed":
            score.killed += 1
        elif outcome == "incompetent":
            score.incompetent += 1
        else:
            score.survived.append(describe(copy, item, result.get("diff") or ""))
    return score


def describe(copy: Path, item: dict[str, Any], diff: str) -> str:
    """`path:line operator` and the changed lines, plus the explanation if the code has one.

    The explanation is an `# equivalent mutant: …` comment on the mutated line or just above
    it, found by the mutated line's text (a kept session's positions may be stale).
    """
    mutation: dict[str, Any] = item["mutations"][0]
    path = Path(mutation["module_path"])
    removed = [d[1:] for d in diff.splitlines() if d.startswith("-") and not d.startswith("---")]
    source = (copy / path).read_text().splitlines()
    why = ""
    for index, text in enumerate(source):
        if removed and text == removed[0]:
            for candidate in source[max(index - 2, 0) : index + 1]:
                if found := EXPLAINED.search(candidate):
                    why = f"\n      explained: {found['why'].strip()}"
    changed = [
        f"      {d}"
        for d in diff.splitlines()
        if d[:1] in "+-" and not d.startswith(("+++", "---"))
    ]
    line = int(mutation["start_pos"][0])
    return f"{path}:{line} {mutation['operator_name']}\n" + "\n".join(changed) + why


# -- SQL mutants ---------------------------------------------------------------------------


def run_sql_mutant(parent: Path, mutant: SqlMutant, *, whole_files: bool = False) -> bool:
    """Apply one mutant to a fresh copy and run its tests; True when they fail (killed).

    `whole_files` runs every test of the files the mutant names (how the figures before the
    targeted tests existed were taken).
    """
    copy = make_copy(parent)
    tests = mutant.tests
    if whole_files:
        tests = tuple(dict.fromkeys(t.split("::", 1)[0] for t in tests))
    try:
        mutant.apply(copy / "supabase" / "migrations")
        tests = tuple(present(copy, tests))
        if not tests:
            raise SystemExit(f"{mutant.name}: none of its tests exists")
        result = subprocess.run(pytest_command(tests), cwd=copy, check=False, capture_output=True)
        return result.returncode != 0
    finally:
        stop_clusters(copy)
        shutil.rmtree(copy, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen targets and print the score of each, with its survivors."""
    parser = argparse.ArgumentParser(prog="python -m mutate", description=__doc__)
    parser.add_argument("--python", nargs="*", metavar="TARGET", help="Python targets only")
    parser.add_argument("--sql", nargs="*", metavar="MUTANT", help="SQL mutants only")
    parser.add_argument(
        "--recheck",
        nargs="+",
        type=Path,
        metavar="SESSION",
        help="run the survivors of kept sessions (.callpanion/mutate/sessions/) again",
    )
    parser.add_argument("--keep", action="store_true", help="keep the copy (for cr-report)")
    parser.add_argument(
        "--whole-files", action="store_true", help="SQL mutants: run whole test files"
    )
    args = parser.parse_args(argv)
    everything = args.python is None and args.sql is None and args.recheck is None
    parent = ROOT / ".callpanion" / "mutate"
    scores: list[Score] = []

    if args.recheck:
        copy = make_copy(parent)
        try:
            for saved in args.recheck:
                score = recheck_python_target(copy, saved.resolve())
                scores.append(score)
                print_score(score)
        finally:
            shutil.rmtree(copy, ignore_errors=True)

    if everything or args.python is not None:
        names = args.python or [t.name for t in PYTHON_TARGETS]
        unknown = set(names) - {t.name for t in PYTHON_TARGETS}
        if unknown:
            parser.error(f"unknown Python target(s): {', '.join(sorted(unknown))}")
        copy = make_copy(parent)
        try:
            by_name = {t.name: t for t in PYTHON_TARGETS}
            for name in names:
                score = run_python_target(copy, by_name[name])
                scores.append(score)
                print_score(score)
        finally:
            if args.keep:
                print(f"copy kept in {copy}")
            else:
                shutil.rmtree(copy, ignore_errors=True)

    if everything or args.sql is not None:
        names = args.sql or [m.name for m in SQL_MUTANTS]
        unknown = set(names) - {m.name for m in SQL_MUTANTS}
        if unknown:
            parser.error(f"unknown SQL mutant(s): {', '.join(sorted(unknown))}")
        sql = Score("SQL invariants (supabase/migrations)")
        started = time.monotonic()
        for mutant in SQL_MUTANTS:
            if mutant.name in names:
                killed = run_sql_mutant(parent, mutant, whole_files=args.whole_files)
                print(f"  sql {mutant.name}: {'killed' if killed else 'SURVIVED'}", flush=True)
                if killed:
                    sql.killed += 1
                else:
                    sql.survived.append(f"{mutant.migration}: {mutant.name}")
        sql.seconds = time.monotonic() - started
        scores.append(sql)
        print_score(sql)

    print("\nmutation score per target")
    for score in scores:
        print("  " + score.line())
    return 0


def print_score(score: Score) -> None:
    """The score line, then every survivor with its change and explanation."""
    print("\n" + score.line(), flush=True)
    for survivor in score.survived:
        print("  survived: " + survivor, flush=True)
