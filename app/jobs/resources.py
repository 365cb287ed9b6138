"""Whether a job's resources (nodes, procs_per_node) could run on the workers seen alive.

A 422 names what cannot be satisfied, judged from the workers' own registrations
(core/db/tables.py WorkerSeen, written by each worker's reconciler): a node is one worker
of the job's queue, and its procs_per_node processes must fit that worker's `max_procs` (its
GPU count on a GPU worker, one process per GPU; its CPUs or TRAINSERVE_WORKER_PROCS on a
CPU worker). While no worker of the queue has been seen at all, nothing can be judged and
the job is accepted: it waits, queued, like any job submitted before its workers start.
"""

from datetime import timedelta

from sqlalchemy.orm import Session

from app.errors import invalid
from core.config import Settings
from core.db.liveness import alive_workers
from models.spec import JobSpec


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}{'es' if word.endswith('s') else 's'}"


def check_resources(session: Session, settings: Settings, spec: JobSpec, queue: str) -> None:
    """422 on resources.procs_per_node or resources.nodes when no set of live workers of
    `queue` could run the job; nothing is written either way."""
    nodes, procs = spec.resources.nodes, spec.resources.procs_per_node
    if nodes == 1 and procs == 1:
        return
    seen = alive_workers(session, queue, timedelta(seconds=settings.worker_alive_seconds))
    if not seen:
        return
    fitting = [w for w in seen if w.max_procs >= procs]
    if not fitting:
        most = max(w.max_procs for w in seen)
        gpus = all(w.device.startswith("cuda") for w in seen)
        capacity = (f"the {_plural(most, 'GPU')} of every {queue} worker seen" if gpus else
                    f"the {_plural(most, 'process')} every {queue} worker seen may start "
                    "for one job (its CPUs, or TRAINSERVE_WORKER_PROCS)")
        if gpus and most != min(w.max_procs for w in seen):
            capacity = f"the GPUs of every {queue} worker seen (at most {most})"
        raise invalid("resources.procs_per_node", f"procs_per_node: {procs} exceeds {capacity}")
    if len(fitting) < nodes:
        which = f"workers of queue {queue}" + (
            f" with room for {procs} processes" if len(fitting) < len(seen) else "")
        have = len(fitting)
        raise invalid("resources.nodes", f"nodes: {nodes} needs {nodes} {which}; {have} "
                      f"{'has' if have == 1 else 'have'} been seen (alive within the last "
                      f"{settings.worker_alive_seconds:g} s)")
