"""Paths in the artifact store: whatever a path names must lie under the store's root."""

from pathlib import Path


def under_root(root: Path, relative: str) -> Path | None:
    """The resolved path if it stays under `root` (links followed), else None."""
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None
