"""Paths in the artifact store: whatever a path names must lie under the store's root."""

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

# Every row id (core.db.tables.new_id): paths in the store are built from ids, never input.
ID = re.compile(r"[0-9a-f]{28}")


def under_root(root: Path, relative: str) -> Path | None:
    """The resolved path if it stays under `root` (links followed), else None."""
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None


def contained(root: Path, relative: str, refuse: Callable[[str], Exception]) -> Path:
    """`under_root`, raising `refuse(reason)` for a path that would leave the root."""
    path = under_root(root, relative)
    if path is None:
        raise refuse(f"{relative!r} leaves the artifact store")
    return path


def read_verified(path: Path, sha256: str, refuse: Callable[[str], Exception],
                  what: str) -> bytes:
    """The file's bytes, only if they hash to the sha256 recorded when it was written
    (DESIGN.md, invariant 7); else `refuse(reason)`, naming `what` it was."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise refuse(f"{what} is unreadable: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise refuse(f"{what} does not match its recorded sha256")
    return data
