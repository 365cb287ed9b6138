"""A cancel reaches the training loop within a fraction of a second, not at the next
heartbeat. A preemption (workers/preemption.py) arrives the same way, through its own flag
in the same read.

A thread reads the job's cancel flag every `cancel_poll_seconds` (0.25 s by default) and
turns it into the stop reason that the loop reads between batches, so a cancel stops the
job at its next batch. Polling the row rather than listening on a channel: the row is the
record (a Redis pub/sub message sent while no worker listens is lost, so the row would have
to be read anyway), it works alike on the embedded broker and on Redis, and it costs one
primary-key SELECT per interval per running job, with no write: the heartbeat's one UPDATE
per interval stays the only write (DESIGN.md, 'At scale'); 100 running jobs make 400 indexed
reads a second.
"""

import logging
from typing import Protocol

from sqlalchemy import select

from core.db.tables import Job
from core.lifecycle import StopReason
from workers.periodic import Periodic
from workers.runtime import Runtime

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    reason: str | None

    def request_stop(self, reason: StopReason) -> None: ...


class CancelWatch(Periodic):
    """Polls off the training thread until the run stops for any reason; a database error
    is skipped (the heartbeat reports outages) and the next interval reads again."""

    def __init__(self, rt: Runtime, job_id: str, target: Stoppable) -> None:
        super().__init__(f"cancel-{job_id}", rt.settings.cancel_poll_seconds)
        self._rt, self._job_id, self._target = rt, job_id, target

    def requested(self) -> StopReason | None:
        """A cancel, or a preemption (the reconciler's), in one read of the job's flags."""
        with self._rt.sessions() as session:
            flags = session.execute(select(Job.cancel_requested, Job.preempt_requested)
                                    .where(Job.id == self._job_id)).first()
        if flags is None:
            return None
        return StopReason.CANCEL if flags[0] else StopReason.PREEMPT if flags[1] else None

    def done(self) -> bool:
        return self._target.reason is not None

    def tick(self) -> None:
        try:
            reason = self.requested()
        except Exception as exc:
            log.debug("cancel check for %s failed: %s", self._job_id, type(exc).__name__)
            return
        if reason is not None:
            self._target.request_stop(reason)
