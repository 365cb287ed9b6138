"""A worker's part in sweeps (core/sweeps/): the pruner asked after each recorded epoch of
a trial, and the sweep driven on as soon as one of its trials ends."""

import logging

from celery import Celery
from sqlalchemy import select, update

from core.db.engine import session_scope
from core.db.tables import Job, Sweep, SweepTrial
from core.lifecycle import StopReason
from core.sweeps import driver, records, study
from core.sweeps.spec import SweepSpec
from workers.cancel import Stoppable
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def check_prune(rt: Runtime, job_id: str, sweep_id: str, since: int,
                target: Stoppable) -> None:
    """After the epochs past `since` are committed (this runs on the recorder's thread, in
    order after them): ask the pruner, keep what it noted on the trial's row, and stop the
    run at its next batch if it says so. The run then checkpoints and ends `pruned`."""
    with session_scope(rt.sessions) as session:
        sweep = session.get(Sweep, sweep_id)
        trial = session.execute(select(SweepTrial).where(SweepTrial.job_id == job_id)
                                ).scalar_one_or_none()
        if sweep is None or trial is None:
            return
        spec = SweepSpec.model_validate(sweep.spec)
        if spec.pruner.name == "none":
            return
        trials = records.load(session, sweep_id, spec.objective.metric)
        try:
            pruned, attrs = study.prune(spec, trials, number=trial.number, since=since,
                                        epochs=spec.base["training"]["epochs"])
        except Exception:  # the searcher's own failure must not fail the trial: it goes on
            log.exception("job %s: the sweep's pruner raised; not pruned", job_id)
            return
        if attrs != trial.system_attrs:
            session.execute(update(SweepTrial).where(SweepTrial.job_id == job_id)
                            .values(system_attrs=attrs))
    if pruned:
        log.info("job %s: pruned by its sweep's %s pruner", job_id, spec.pruner.name)
        target.request_stop(StopReason.PRUNE)


def after_trial(rt: Runtime, sender: Celery, job_id: str) -> None:
    """A trial ended here (or handed itself back): drive its sweep now rather than at the
    next reconciler pass. Failing is harmless: every pass drives every sweep."""
    try:
        with session_scope(rt.sessions) as session:
            sweep_id = session.execute(select(Job.sweep_id).where(Job.id == job_id)).scalar()
        if sweep_id is not None:
            driver.advance(rt.sessions, sender, sweep_id)
    except Exception as exc:
        log.warning("driving the sweep after job %s failed: %s", job_id, type(exc).__name__)
