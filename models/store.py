"""Paths in the artifact store: whatever a path names must lie under the store's root."""

import re
from pathlib import Path

# Every row id (core.db.tables.new_id): paths in the store are built from ids, never input.
ID = re.compile(r"[0-9a-f]{28}")


def under_root(root: Path, relative: str) -> Path | None:
    """The resolved path if it stays under `root` (links followed), else None."""
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None
