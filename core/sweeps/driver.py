"""The driver: makes a sweep's next trials and ends the sweep once its last trial ended.

Any process may drive any sweep at any time, and several at once (the API's loop, every
worker's reconciler, a worker whose trial just ended): a trial is made by one transaction
that first takes the sweep's row (a conditional UPDATE on `running`, so it waits for or
loses to a cancel), reads the trials, asks the sampler and inserts the job with its
sweep_trials row, whose (sweep_id, number) is unique. A driver that read a stale count
loses on that constraint and reads again; one that dies before committing made nothing.
The job is then sent like any other (core/dispatch.py: its row is claimed for the send, and
the reconciler resends it if the process dies between commit and send).
"""

import logging

from celery import Celery
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import lifecycle
from core.db.engine import session_scope
from core.db.liveness import gpu_worker_alive
from core.db.tables import Job, Sweep, SweepTrial, utcnow
from core.dispatch import send_new
from core.lifecycle import ACTIVE, JobStatus, SweepStatus
from core.loop import Loop
from core.sweeps import records, space, study
from core.sweeps.spec import SweepSpec
from models.spec import JobSpec

log = logging.getLogger(__name__)
# Passes of one advance: a sweep makes at most max_concurrent trials at once, and a pass
# lost to another driver reads again; this bounds a pass that keeps losing.
MAX_STEPS = 200


def trial_limit(spec: SweepSpec) -> int:
    """max_trials, or fewer for a grid with fewer points."""
    return min(spec.max_trials, space.grid_size(spec.space)) if spec.sampler == "grid" \
        else spec.max_trials


def queue_for(session: Session, device: str) -> str:
    """As a job submitted by hand is routed (app/jobs/service.py): auto goes to the gpu queue
    only while a GPU worker is alive."""
    if device in ("cpu", "cuda"):
        return "gpu" if device == "cuda" else "cpu"
    return "gpu" if gpu_worker_alive(session) else "cpu"


def _finish(session: Session, sweep_id: str, trials: list[study.TrialRecord]) -> None:
    succeeded = any(t.status != JobStatus.FAILED for t in trials)
    if lifecycle.finish_sweep(session, sweep_id, succeeded=succeeded,
                              error=None if succeeded else "every trial failed"):
        log.info("sweep %s ended: %s", sweep_id, "succeeded" if succeeded else "failed")


def _due(spec: SweepSpec, trials: list[study.TrialRecord]) -> str | None:
    """What the sweep needs now: 'finish', 'trial', or nothing."""
    active = sum(t.status in ACTIVE for t in trials)
    if len(trials) >= trial_limit(spec):
        return "finish" if active == 0 else None
    return "trial" if active < spec.max_concurrent else None


def _make_trial(session: Session, sweep: Sweep, spec: SweepSpec,
                trials: list[study.TrialRecord]) -> tuple[str, str, int] | None:
    base = spec.base
    params, attrs = study.ask(spec, trials, epochs=base["training"]["epochs"])
    try:
        job_spec = JobSpec.model_validate(space.apply(base, params))
    except ValidationError as exc:
        # Each range's ends and each value were accepted alone at submit; a combination
        # the spec refuses ends the sweep rather than making a job that cannot run.
        lifecycle.finish_sweep(session, sweep.id, succeeded=False,
                               error=f"trial {len(trials)}'s parameters {params} make a spec "
                               f"the service refuses: {exc.errors()[0]['msg']}")
        return None
    number = len(trials)
    job = Job(owner_id=sweep.owner_id, name=f"{sweep.name}-{number}",
              spec=job_spec.model_dump(mode="json"), dataset_ref=job_spec.dataset,
              queue=queue_for(session, job_spec.device), epochs=job_spec.training.progress_total,
              sweep_id=sweep.id, nodes=job_spec.resources.nodes,
              procs_per_node=job_spec.resources.procs_per_node,
              sent_at=utcnow())  # claimed for its first send
    lifecycle.submit(session, job)
    session.flush()
    session.add(SweepTrial(sweep_id=sweep.id, number=number, job_id=job.id, params=params,
                           system_attrs=attrs))
    session.flush()
    log.info("sweep %s: trial %d is job %s with %s", sweep.id, number, job.id, params)
    return job.id, job.queue, job.nodes


def _step(session: Session, sweep_id: str) -> tuple[str, str, int] | bool:
    """One decision under the sweep's row lock: a new trial's (job id, queue, nodes), True if the
    sweep needs nothing more now or has ended, False if this pass lost a race."""
    if not lifecycle.keep_sweep_running(session, sweep_id):
        return True
    sweep = session.get(Sweep, sweep_id)
    assert sweep is not None
    spec = SweepSpec.model_validate(sweep.spec)
    trials = records.load(session, sweep_id, spec.objective.metric)
    due = _due(spec, trials)
    if due == "finish":
        _finish(session, sweep_id, trials)
    if due != "trial":
        return True
    try:
        made = _make_trial(session, sweep, spec, trials)
    except IntegrityError:  # another driver made this number first
        return False
    return made if made is not None else True


def _needs_work(sessions: sessionmaker[Session], sweep_id: str) -> bool:
    """A read-only look first, so that idle passes over a running sweep write nothing."""
    with session_scope(sessions) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or sweep.status != SweepStatus.RUNNING:
            return False
        spec = SweepSpec.model_validate(sweep.spec)
        statuses = list(session.execute(select(Job.status).where(Job.sweep_id == sweep_id))
                        .scalars())
    fake = [study.TrialRecord(number=i, params={}, status=s) for i, s in enumerate(statuses)]
    return _due(spec, fake) is not None


def advance(sessions: sessionmaker[Session], sender: Celery, sweep_id: str) -> int:
    """Make the trials the sweep is due, send them, end the sweep if its last trial ended.
    Returns how many trials it made."""
    made = 0
    for _ in range(MAX_STEPS):
        if not _needs_work(sessions, sweep_id):
            break
        session = sessions()
        try:
            outcome = _step(session, sweep_id)
            if outcome is False:
                session.rollback()
                continue
            session.commit()
            if outcome is True:
                break
            assert isinstance(outcome, tuple)
            send_new(session, sender, *outcome)
            made += 1
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
    return made


def advance_all(sessions: sessionmaker[Session], sender: Celery) -> int:
    """Every running sweep, each on its own: one that fails is logged and the rest go on."""
    with session_scope(sessions) as session:
        ids = list(session.execute(select(Sweep.id).where(
            Sweep.status == SweepStatus.RUNNING).order_by(Sweep.id)).scalars())
    made = 0
    for sweep_id in ids:
        try:
            made += advance(sessions, sender, sweep_id)
        except Exception as exc:
            log.warning("driving sweep %s failed: %s: %s", sweep_id, type(exc).__name__, exc)
    return made


class SweepDriver(Loop):
    """The API's loop: every `interval` seconds, every running sweep is advanced. Workers
    drive sweeps too (their reconciler, and each trial's end), so sweeps go on while no API
    runs."""

    def __init__(self, sessions: sessionmaker[Session], sender: Celery, interval: float):
        super().__init__("sweep-driver", interval, "driving sweeps")
        self.sessions, self.sender = sessions, sender

    def run_once(self) -> int:
        return advance_all(self.sessions, self.sender)
