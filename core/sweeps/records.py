"""A sweep's trials read from their rows: what study.py rebuilds a study from, and what the
API shows."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.tables import EpochMetric, Job, SweepTrial, TrainedModel
from core.lifecycle import JobStatus, ModelStatus
from core.sweeps.study import TrialRecord


def trial_rows(session: Session, sweep_id: str) -> list[tuple[SweepTrial, Job]]:
    return [(trial, job) for trial, job in session.execute(
        select(SweepTrial, Job).join(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number))]


def curves(session: Session, job_ids: list[str], metric: str) -> dict[str, dict[int, float]]:
    """Each job's objective per recorded epoch."""
    out: dict[str, dict[int, float]] = {job_id: {} for job_id in job_ids}
    if not job_ids:
        return out
    for job_id, epoch, values in session.execute(
            select(EpochMetric.job_id, EpochMetric.epoch, EpochMetric.values)
            .where(EpochMetric.job_id.in_(job_ids)).order_by(EpochMetric.epoch)):
        value = values.get(metric)
        if isinstance(value, int | float):
            out[job_id][epoch] = float(value)
    return out


def ready_models(session: Session, job_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Succeeded trials' models: job id -> (model id, its metrics)."""
    if not job_ids:
        return {}
    rows = session.execute(select(TrainedModel.job_id, TrainedModel.id, TrainedModel.metrics)
                           .where(TrainedModel.job_id.in_(job_ids),
                                  TrainedModel.status == ModelStatus.READY))
    return {job_id: (model_id, metrics) for job_id, model_id, metrics in rows}


def final_value(job: Job, metric: str, curve: dict[int, float],
                model: tuple[str, dict[str, Any]] | None) -> float | None:
    """A completed trial's value is its model's (the best epoch under early stopping, else
    the last); a pruned or failed one's, its last recorded epoch's; a running one has none."""
    if job.status == JobStatus.SUCCEEDED and model is not None and isinstance(
            model[1].get(metric), int | float):
        return float(model[1][metric])
    if job.status in (JobStatus.SUCCEEDED, JobStatus.PRUNED) and curve:
        return curve[max(curve)]
    return None


def load(session: Session, sweep_id: str, metric: str) -> list[TrialRecord]:
    rows = trial_rows(session, sweep_id)
    ids = [job.id for _, job in rows]
    by_job, models = curves(session, ids, metric), ready_models(session, ids)
    return [TrialRecord(number=trial.number, params=trial.params, status=job.status,
                        system_attrs=trial.system_attrs, intermediate=by_job[job.id],
                        value=final_value(job, metric, by_job[job.id], models.get(job.id)))
            for trial, job in rows]
