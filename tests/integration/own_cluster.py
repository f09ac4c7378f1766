"""A test cluster of one test module's own, for tests that stop and restart Postgres.

A plain support module (never a conftest): the cluster lives under the stack root's
`tests/` folder like the session's, on a free port, and is stopped and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.stack.cluster import LocalStack, free_port
from python_worker.stack.settings import default_stack_root, stack_settings


@contextmanager
def own_cluster(name: str) -> Iterator[tuple[LocalStack, str]]:
    """A started cluster and a migrated database in it (its URL); deleted afterwards."""
    base = stack_settings({})
    stack = LocalStack(
        base.model_copy(
            update={
                "stack_dir": default_stack_root(DEFAULT_PROJECT_DIR) / "tests" / name,
                "port": free_port(),
            }
        )
    )
    stack.down()
    shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
    try:
        stack.up(apply=False)
        yield stack, stack.create_migrated_database(name.replace("-", "_"))
    finally:
        stack.down()
        shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            stack.settings.stack_dir.parent.rmdir()  # the shared tests/ folder, once empty
