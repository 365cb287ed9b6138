"""What build of trainserve this process runs: its version and, when known, its git commit
(a model's lineage records both)."""

import os
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache
def version() -> str:
    try:
        return metadata.version("trainserve")
    except metadata.PackageNotFoundError:
        return "unknown"


@lru_cache
def git_commit() -> str | None:
    """TRAINSERVE_GIT_COMMIT when the deployment sets it (an image has no .git), else the
    source checkout's HEAD; None when neither says."""
    given = os.environ.get("TRAINSERVE_GIT_COMMIT", "").strip()
    if given:
        return given
    if not (SOURCE_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None
