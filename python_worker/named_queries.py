"""Named-query files, as procrastinate keeps them: each program's SQL in one `queries.sql`.

The API and the worker each read their own file (next to their modules); this reader is the
one thing they share about it.
"""

from __future__ import annotations

import re
from pathlib import Path


def load_queries(path: Path) -> dict[str, str]:
    """Named blocks: `-- name --`, a comment line, then the statement up to the next name."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in path.read_text().splitlines():
        header = re.fullmatch(r"-- ([a-z_]+) --", line.strip())
        if header:
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = header.group(1), []
        elif name and not line.startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries
