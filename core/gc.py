"""Garbage collection of the artifact store: remove the objects that no row refers to.

A row is the record (DESIGN.md invariant 1); an object nobody records is debris: a write
whose row never came (a crash between the two), a delete whose object removal failed after
its commit, an upload abandoned midway. Only objects older than `grace_seconds` go, so a
write in flight (put first, row after) is never taken for debris, and nothing under a job
that is still queued or running is touched (its own worker sweeps that when it resumes).
"""

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.tables import Checkpoint, Dataset, Job
from core.lifecycle import ACTIVE
from core.store import Store

log = logging.getLogger(__name__)

GRACE_SECONDS = 3600.0


@dataclass
class Collected:
    objects: list[str] = field(default_factory=list)
    bytes: int = 0
    incomplete: int = 0


def _referenced(session: Session) -> tuple[set[str], tuple[str, ...]]:
    """Keys that rows name exactly (checkpoints), and prefixes that rows own whole
    (a dataset's objects, however many its stored form has; an active job's folder)."""
    exact = set(session.execute(select(Checkpoint.path)).scalars())
    prefixes = [f"datasets/{dataset_id}" for dataset_id in
                session.execute(select(Dataset.id)).scalars()]
    prefixes += [f"jobs/{job_id}/" for job_id in
                 session.execute(select(Job.id).where(Job.status.in_(ACTIVE))).scalars()]
    return exact, tuple(prefixes)


def collect(session: Session, store: Store, *, grace_seconds: float = GRACE_SECONDS,
            dry_run: bool = False) -> Collected:
    """Remove (or with `dry_run`, only list) unreferenced objects older than the grace age,
    and incomplete uploads as old. The listing comes first and the rows after it, so an
    object whose row commits in between is seen as referenced."""
    listed = store.list()
    exact, prefixes = _referenced(session)
    session.rollback()
    cutoff, found = time.time() - grace_seconds, Collected()
    for stored in listed:
        if stored.key in exact or stored.key.startswith(prefixes) or stored.modified > cutoff:
            continue
        found.objects.append(stored.key)
        found.bytes += stored.size
        if not dry_run:
            log.info("gc: removing %s (%d bytes), which no row names", stored.key, stored.size)
            store.delete(stored.key)
    if not dry_run:
        found.incomplete = store.sweep_incomplete(grace_seconds)
    return found
