"""The SQL mutants of `make mutate` still fit the migrations they mutate.

Fast and part of `make test`, so that a rewritten function or a new migration cannot make a
mutant silently stop applying (it would then "survive" for the wrong reason, or be skipped):
each mutant's original text is found exactly once in its migration, and every mutated set of
migrations still migrates a scratch database.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mutate.sql_mutants import SQL_MUTANTS, SqlMutant
from python_worker.stack.cluster import LocalStack
from tests.support.db import PROJECT_DIR

MIGRATIONS = PROJECT_DIR / "supabase" / "migrations"


@pytest.mark.parametrize("mutant", SQL_MUTANTS, ids=lambda m: m.name)
def test_each_mutants_original_text_is_in_its_migration_once(mutant: SqlMutant) -> None:
    text = (MIGRATIONS / mutant.migration).read_text()
    assert text.count(mutant.original) == 1, f"re-anchor {mutant.name} in {mutant.migration}"
    assert mutant.mutated != mutant.original
    for test in mutant.tests:
        assert (PROJECT_DIR / test.split("::", 1)[0]).is_file(), test
        if "::" in test:
            name = test.split("::", 1)[1]
            assert f"def {name}(" in (PROJECT_DIR / test.split("::", 1)[0]).read_text(), test


#: What a mutated piece of text belongs to, found before it in its migration.
SUBJECTS = (
    (re.compile(r"create (?:or replace )?function ([\w.]+)\s*\("), r"function {}\s*\("),
    (re.compile(r"create policy (\w+)"), r"policy {}\b"),
    (re.compile(r"constraint (\w+)"), r"drop constraint (?:if exists )?{}\b"),
)


def subject(text: str, original: str) -> tuple[str, str]:
    """The function, policy or constraint that `original` belongs to (the last one starting
    before its end), and the pattern a later migration would use to replace it."""
    end = text.index(original) + len(original)
    found = [
        (m.start(), m.group(1), later.format(re.escape(m.group(1))))
        for pattern, later in SUBJECTS
        for m in pattern.finditer(text, 0, end)
    ]
    _, name, later = max(found)
    return name, later


@pytest.mark.parametrize("mutant", SQL_MUTANTS, ids=lambda m: m.name)
def test_no_later_migration_replaces_what_a_mutant_changes(mutant: SqlMutant) -> None:
    # A function re-created (or a policy or constraint replaced) by a later migration makes
    # the mutant change dead text: it would "survive" for the wrong reason.
    text = (MIGRATIONS / mutant.migration).read_text()
    name, later = subject(text, mutant.original)
    replaced_in = [
        path.name
        for path in sorted(MIGRATIONS.glob("*.sql"))
        if path.name > mutant.migration and re.search(later, path.read_text())
    ]
    assert replaced_in == [], f"re-anchor {mutant.name}: {name} is replaced in {replaced_in}"


def test_every_mutant_still_migrates_a_scratch_database(
    pg_stack: LocalStack, tmp_path: Path
) -> None:
    # Mutants that do not touch the same text are applied together, so a few scratch
    # databases check them all (a migration error names the file and line).
    groups: list[Path] = []
    for mutant in SQL_MUTANTS:
        for project in groups:
            try:
                mutant.apply(project / "supabase" / "migrations")
                break
            except ValueError:
                continue
        else:
            project = tmp_path / f"group{len(groups)}"
            shutil.copytree(PROJECT_DIR / "sql" / "platform", project / "sql" / "platform")
            shutil.copytree(MIGRATIONS, project / "supabase" / "migrations")
            mutant.apply(project / "supabase" / "migrations")
            groups.append(project)
        assert (
            mutant.mutated in (project / "supabase" / "migrations" / mutant.migration).read_text()
        )
    assert len(groups) < len(SQL_MUTANTS)
    for project in groups:
        stack = LocalStack(pg_stack.settings.model_copy(update={"project_dir": project}))
        with stack.scratch_database("mutants"):
            pass


def test_a_mutant_whose_text_is_gone_says_to_re_anchor_it(tmp_path: Path) -> None:
    (tmp_path / "x.sql").write_text("select 1;\n")
    gone = SqlMutant("gone", "x.sql", "select 2;", "select 3;", ())
    with pytest.raises(ValueError, match=r"gone: the original text is found 0 times in x\.sql"):
        gone.apply(tmp_path)
