"""What a training run writes: metric rows, checkpoints, and how the job ended.

Every write is conditional on this worker still holding the job's lease, so a worker that
lost its lease (and whose job now runs elsewhere) can never overwrite the new owner's work.
"""

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import lifecycle
from core.db.engine import session_scope
from core.db.tables import Checkpoint, EpochMetric, Job, TrainedModel
from core.store import ArtifactRefused, StoreError
from models import checkpoint as ckpt
from models.data import ImageData, TextData
from models.spec import higher_is_better
from workers import lineage
from workers.faults import TrainingError
from workers.runtime import Runtime
from workers.train_state import InitialWeights, Resume

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker owns the job now; stop without writing anything more."""


def _hold(session: Session, rt: Runtime, job_id: str, **values: Any) -> None:
    """Update the job only while this worker holds its lease (a bare check if no values)."""
    if not lifecycle.hold(session, job_id, worker=rt.name, **values):
        raise LeaseLost(job_id)


def _moved(moved: bool, job_id: str) -> None:
    if not moved:
        raise LeaseLost(job_id)


def record_epochs(rt: Runtime, job_id: str, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Metric rows in one transaction, with the job's progress set to the last of them."""
    epoch, metrics = rows[-1]
    with session_scope(rt.sessions) as session:
        _hold(session, rt, job_id, epoch=epoch, latest_metrics={"epoch": epoch, **metrics})
        session.add_all(EpochMetric(job_id=job_id, epoch=e, values=m) for e, m in rows)


def describe_origin(rt: Runtime, job_id: str, data: ImageData | TextData) -> dict[str, Any]:
    """The lineage its model will carry (workers/lineage.py), read once at the run's start."""
    with rt.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return lineage.origin(session, job, data)


def record_checkpoint(rt: Runtime, job_id: str, epoch: int, data: bytes,
                      meta: dict[str, Any], origin: dict[str, Any] | None = None) -> None:
    """Put the encoded checkpoint into the store whole, then write its row; a crash between
    leaves only an orphan object (swept by prepare_resume or `trainserve gc`), never a row
    without its object. `origin` is the lineage of the model row the first checkpoint
    makes."""
    relative = ckpt.relative_path(job_id, epoch)
    sha256, size = rt.store.put_bytes(relative, data)
    with session_scope(rt.sessions) as session:
        _hold(session, rt, job_id)
        row = Checkpoint(job_id=job_id, epoch=epoch, path=relative, sha256=sha256, bytes=size,
                         metrics=meta["metrics"], is_best=meta["is_best"],
                         partial=meta["partial"])
        session.add(row)
        session.flush()
        _follow(session, job_id, row, meta, origin or {})
    _prune(rt, job_id)


def _follow(session: Session, job_id: str, row: Checkpoint, meta: dict[str, Any],
            origin: dict[str, Any]) -> None:
    """The job's model record points at its newest checkpoint (made at the first one)."""
    model = session.execute(select(TrainedModel).where(TrainedModel.job_id == job_id)
                            ).scalar_one_or_none()
    metrics = {"epoch": row.epoch, **row.metrics}
    if model is None:
        job = session.get(Job, job_id)
        assert job is not None
        lifecycle.start_model(session, TrainedModel(
            owner_id=job.owner_id, job_id=job_id, checkpoint_id=row.id, name=job.name,
            arch=meta["arch"], task=meta["task"], info={"dataset": job.dataset_ref, **meta["data"]},
            metrics=metrics, lineage=origin))
    else:
        model.checkpoint_id, model.metrics = row.id, metrics
        if origin and not model.lineage:
            model.lineage = origin


def _best(rows: list[Checkpoint], training: dict[str, Any]) -> Checkpoint | None:
    """Early stopping's best (it marks it), else the checkpoint with the lowest val_loss."""
    if training.get("early_stopping"):
        return next((row for row in rows if row.is_best), None)
    metric = "val_loss"
    scored = [row for row in rows if metric in row.metrics and not row.partial]
    if not scored:
        return None
    pick = max if higher_is_better(metric) else min
    return pick(scored, key=lambda row: row.metrics[metric])


def _prune(rt: Runtime, job_id: str) -> None:
    """Keep the job's latest K checkpoints, its best, and any a model points at."""
    with session_scope(rt.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        keep = job.spec["training"]["keep_checkpoints"]
        rows = list(session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                    .order_by(Checkpoint.epoch.desc())).scalars())
        pinned = set(session.execute(select(TrainedModel.checkpoint_id)
                                     .where(TrainedModel.job_id == job_id)).scalars())
        best = _best(rows, job.spec["training"])
        if best is not None:
            pinned.add(best.id)
        doomed = [row for row in rows[keep:] if row.id not in pinned]
        for row in doomed:
            session.delete(row)
        paths = [row.path for row in doomed]
    for relative in paths:  # objects go only after their rows are gone
        try:
            rt.store.delete(relative)
        except StoreError as exc:  # not retried: the row is gone, gc removes the object
            log.warning("job %s: could not remove %s (trainserve gc will): %s", job_id,
                        relative, exc)


def load_checkpoint(rt: Runtime, row: Checkpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's tensors and metadata, fetched through this host's cache and checked
    against its recorded sha256. CheckpointError when its object is missing or altered; a
    store that cannot be reached raises StoreUnavailable (the job is retried)."""
    try:
        path = rt.store.fetch(row.path, row.sha256, "the checkpoint")
    except ArtifactRefused as exc:
        raise ckpt.CheckpointError(str(exc)) from exc
    return ckpt.load(path, row.sha256)


def prepare_resume(rt: Runtime, job_id: str, device: str) -> Resume | None:
    """The newest checkpoint whose bytes match its recorded hash. Checkpoints and metric
    rows past it are dropped, and so is whatever a crash left half-written: the resumed run
    recomputes exactly those epochs."""
    with session_scope(rt.sessions) as session:
        rows = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                               .order_by(Checkpoint.epoch.desc())).scalars().all()
        good: Checkpoint | None = None
        resume: Resume | None = None
        for row in rows:
            try:
                tensors, meta = load_checkpoint(rt, row)
            except ckpt.CheckpointError as exc:
                log.warning("checkpoint %s of job %s refused: %s", row.epoch, job_id, exc)
                continue
            good, resume = row, Resume(epoch=row.epoch, tensors=tensors, meta=meta)
            break
        after = resume.epoch if resume else 0
        model = session.execute(select(TrainedModel).where(TrainedModel.job_id == job_id)
                                ).scalar_one_or_none()
        if model is not None and good is None:
            session.delete(model)
        elif model is not None and good is not None:
            model.checkpoint_id, model.metrics = good.id, {"epoch": good.epoch, **good.metrics}
        session.flush()
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id,
                                                 Checkpoint.epoch > after))
        session.execute(delete(EpochMetric).where(EpochMetric.job_id == job_id,
                                                  EpochMetric.epoch > after))
        _hold(session, rt, job_id, epoch=after, device_used=device)
        kept = {row.path for row in rows if row.epoch <= after}
    _sweep(rt, job_id, kept)
    return resume


def latest_resume(rt: Runtime, job_id: str) -> Resume | None:
    """The job's newest checkpoint, read only: the ranks of a data-parallel job other than
    the recording one resume from it once that one's prepare_resume has left the newest
    checkpoint the good one (workers/rank.py)."""
    with rt.sessions() as session:
        row = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                              .order_by(Checkpoint.epoch.desc()).limit(1)).scalar_one_or_none()
    if row is None:
        return None
    tensors, meta = load_checkpoint(rt, row)
    return Resume(epoch=row.epoch, tensors=tensors, meta=meta)


def _sweep(rt: Runtime, job_id: str, kept: set[str]) -> None:
    """Remove the job's objects that no checkpoint row names: those written just before a
    crash that recorded no row, and in a directory store the temporary file of a write that
    crashed (in a bucket that is an upload never completed, invisible: gc aborts it)."""
    for stored in rt.store.list(f"jobs/{job_id}/"):
        if stored.key not in kept:
            log.info("job %s: removing %s, which no checkpoint row names", job_id, stored.key)
            rt.store.delete(stored.key)


def succeed(rt: Runtime, job_id: str, *, model_epoch: int,
            test_metrics: dict[str, float]) -> bool:
    """The job's model becomes the checkpoint of `model_epoch` (its last, or its best under
    early stopping), with the test split's figures added.

    Only if no cancel was accepted first: a cancel answered 202 must end the job cancelled
    however late it came. The condition is in the same UPDATE, so a cancel committed before
    it wins and one after it finds the job ended (409). Returns False, having written
    nothing, when a cancel came first."""
    with session_scope(rt.sessions) as session:
        chosen = session.execute(select(Checkpoint).where(
            Checkpoint.job_id == job_id, Checkpoint.epoch == model_epoch)).scalar_one()
        job = session.get(Job, job_id)
        assert job is not None
        latest = {**(job.latest_metrics or {}), **test_metrics}
        if not lifecycle.succeed(
                session, job_id, worker=rt.name, latest_metrics=latest, checkpoint_id=chosen.id,
                model_metrics={"epoch": chosen.epoch, **chosen.metrics, **test_metrics}):
            _hold(session, rt, job_id)  # LeaseLost if the job is no longer ours
            return False
        _complete_lineage(session, job, latest)
    return True


def _complete_lineage(session: Session, job: Job, final: dict[str, Any]) -> None:
    """The model's lineage gets the run's final metrics and its best epoch's (early
    stopping's best, else the lowest val_loss; the final ones when nothing is scored)."""
    model = session.execute(select(TrainedModel).where(TrainedModel.job_id == job.id)
                            ).scalar_one_or_none()
    if model is None:
        return
    rows = list(session.execute(select(Checkpoint).where(Checkpoint.job_id == job.id)
                                .order_by(Checkpoint.epoch.desc())).scalars())
    best = _best(rows, job.spec["training"])
    model.lineage = {**(model.lineage or {}), "metrics": {
        "final": final,
        "best": {"epoch": best.epoch, **best.metrics} if best is not None else final}}


def model_weights(rt: Runtime, source_job_id: str) -> InitialWeights:
    """The weights of the model another job produced, for `init_from` (checked by the API)."""
    with session_scope(rt.sessions) as session:
        row = session.execute(
            select(Checkpoint).join(TrainedModel, TrainedModel.checkpoint_id == Checkpoint.id)
            .where(TrainedModel.job_id == source_job_id,
                   TrainedModel.status == lifecycle.ModelStatus.READY)
        ).scalar_one_or_none()
    if row is None:
        raise TrainingError(f"init_from job {source_job_id} has no ready model")
    try:
        tensors, meta = load_checkpoint(rt, row)
    except ckpt.CheckpointError as exc:
        raise TrainingError(f"init_from checkpoint refused: {exc}") from exc
    return InitialWeights(tensors=tensors, meta=meta)


def fail(rt: Runtime, job_id: str, error: str, kind: lifecycle.FailureKind) -> None:
    with session_scope(rt.sessions) as session:
        _moved(lifecycle.fail(session, job_id, worker=rt.name, error=error, kind=kind), job_id)


def time_out(rt: Runtime, job_id: str, limit_seconds: float) -> None:
    with session_scope(rt.sessions) as session:
        _moved(lifecycle.time_out(session, job_id, worker=rt.name,
                                  limit_seconds=limit_seconds), job_id)


def cancelled(rt: Runtime, job_id: str) -> None:
    with session_scope(rt.sessions) as session:
        _moved(lifecycle.cancel_running(session, job_id, worker=rt.name), job_id)


def pruned(rt: Runtime, job_id: str) -> None:
    with session_scope(rt.sessions) as session:
        _moved(lifecycle.prune(session, job_id, worker=rt.name), job_id)


def release(rt: Runtime, job_id: str) -> None:
    """Hand the job back on a graceful shutdown, so another worker resumes it."""
    with session_scope(rt.sessions) as session:
        _moved(lifecycle.hand_back(session, job_id, worker=rt.name), job_id)
