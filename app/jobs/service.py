"""Jobs: the rules. Routes call these with keyword arguments; every query is owner-scoped."""

import logging
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery
from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.service import lock_for_job, resolve_dataset
from app.errors import OverLimit, conflict, invalid, not_found
from app.jobs.resources import check_resources
from app.jobs.scheduling import check_scheduling
from app.jobs.schemas import CheckpointOut, JobOut, MemberOut, Progress, Usage
from core import gangs, lifecycle
from core.config import Settings
from core.db.liveness import gpu_worker_alive
from core.db.pages import newest_first
from core.db.tables import Checkpoint, EpochMetric, Job, Owner, TrainedModel, utcnow
from core.dispatch import send_new
from core.fairshare import Place, Priority
from core.fairshare import places as places_of
from core.lifecycle import ACTIVE, TERMINAL, JobStatus, ModelStatus
from core.store import Store, StoreError
from models import memory, registry
from models.data import has_validation
from models.spec import MAX_PARAMETERS, JobSpec, watched_metrics

log = logging.getLogger(__name__)


def scoped(query: Select[Any], owner: Owner, column: Any) -> Select[Any]:
    return query if owner.is_admin else query.where(column == owner.id)


def _check_fits(spec: JobSpec, info: dict[str, Any]) -> None:
    arch = spec.model.arch
    if info["kind"] == "text" and arch not in registry.TEXT_ARCHS:
        raise invalid("model.arch", f"'{arch}' does not train on text; use rnn, gru or lstm")
    if info["kind"] == "images" and arch not in registry.IMAGE_ARCHS:
        raise invalid("model.arch", f"'{arch}' does not train on images; use mlp or cnn")
    if arch == "cnn" and len(info.get("shape", [])) not in (2, 3):
        raise invalid("model.arch", f"'cnn' needs image-shaped examples; this dataset's are "
                      f"{info['shape']}: use mlp, or upload it with a shape")
    if info["kind"] == "text":
        size = info["num_examples"]
        train_chars = size - int(size * (spec.training.validation_fraction
                                         if spec.training.validation_fraction is not None
                                         else info.get("validation_fraction", 0.1)))
        if spec.training.seq_len + 1 > train_chars:
            raise invalid("training.seq_len", f"the training text has {train_chars} "
                          f"characters; seq_len must be at most {train_chars - 1}")
    config = registry.config_from_spec(spec.model, info)
    params = registry.count_parameters(arch, config)
    if params > MAX_PARAMETERS:
        raise invalid("model", f"{params:,} parameters; the limit is {MAX_PARAMETERS:,}")
    try:
        registry.check_forward(arch, config, info)
    except ValueError as exc:
        raise invalid("model", f"does not fit this dataset's examples ({info.get('shape')}): "
                      f"{exc}") from exc
    _check_watched_metrics(spec, info)


def _split(spec: JobSpec, info: dict[str, Any]) -> tuple[bool, str]:
    """Whether the job holds out a validation split, and the figures that say so."""
    training = spec.training
    fraction = (training.validation_fraction if training.validation_fraction is not None
                else info.get("validation_fraction", 0.1))
    # A dataset's own test split is never part of the train/validation split.
    examples = info["num_examples"] - info.get("test_examples", 0) - (
        info.get("split") or {}).get("test", 0)
    return (has_validation(info["kind"], examples, fraction),
            f"validation_fraction {fraction:g} of {examples:,} examples")


def _check_watched_metrics(spec: JobSpec, info: dict[str, Any]) -> None:
    """A plateau schedule or early stopping must watch a metric that this job records: one
    its kind of model has, and a val_ one only where the job holds out a validation split."""
    for field, metric in watched_metrics(spec.training).items():
        check_recorded(field, metric, spec.model.arch, *_split(spec, info))


def check_recorded(field: str, metric: str, arch: str, validates: bool, split: str) -> None:
    """422 on `field` unless a job of `arch` records `metric` each epoch (`validates`: it
    holds out a validation split, described by `split`)."""
    recorded = registry.metrics_of(arch)
    if metric not in recorded:
        raise invalid(field, f"'{metric}' is not recorded for {arch} models; one of "
                      f"{', '.join(sorted(recorded))}")
    if metric.startswith("val_") and not validates:
        raise invalid(field, f"'{metric}' needs a validation split, and this job holds "
                      f"none out ({split}); watch a train_ metric or raise "
                      "validation_fraction")


def _check_memory(spec: JobSpec, info: dict[str, Any], queue: str, settings: Settings) -> None:
    """422 when one batch's activations (models/memory.py) pass the limit of the device
    kind the job is queued for."""
    device, limit = (("cuda", settings.max_activation_bytes_cuda) if queue == "gpu"
                     else ("cpu", settings.max_activation_bytes_cpu))
    training = spec.training
    needed = memory.activation_bytes(spec.model, info, batch_size=training.batch_size,
                                     seq_len=training.seq_len)
    if needed <= limit:
        return
    fits = memory.max_batch(spec.model, info, seq_len=training.seq_len, limit=limit)
    what = (f"one batch of {training.batch_size:,} needs about {memory.human(needed)} of "
            f"activations (estimated); the limit on {device} is {memory.human(limit)} "
            f"(TRAINSERVE_MAX_ACTIVATION_BYTES_{device.upper()})")
    if fits < 1:
        raise invalid("model", f"{what}, and even one example passes it: make the model "
                      "smaller")
    raise invalid("training.batch_size", f"{what}: use a batch_size of at most {fits:,}, or "
                  "a smaller model")


def _check_init_from(session: Session, owner: Owner, spec: JobSpec,
                     info: dict[str, Any]) -> None:
    """The source job must be the caller's, have a ready model, and the same architecture
    and data shape, so that its weights load into the new model as they are."""
    assert spec.init_from is not None
    source = get_job(session=session, owner=owner, job_id=spec.init_from)
    model = session.execute(select(TrainedModel).where(TrainedModel.job_id == source.id)
                            ).scalar_one_or_none()
    if model is None or model.status != ModelStatus.READY:
        raise conflict("init_from: that job has no ready model (it has not succeeded)")
    source_spec = JobSpec.model_validate(source.spec)
    mine = registry.config_from_spec(spec.model, info)
    theirs = registry.config_from_spec(source_spec.model, model.info)
    if spec.model.arch != source_spec.model.arch or mine != theirs:
        raise invalid("init_from", "that job's model has another architecture or data shape "
                      f"({source_spec.model.arch}: {registry.config_dict(theirs)})")


def _queue_for(session: Session, spec: JobSpec) -> str:
    if spec.device == "cuda":
        return "gpu"
    if spec.device == "cpu":
        return "cpu"
    # auto: the gpu queue only while a GPU worker is alive, so that no job waits on a
    # queue nobody serves (the reconciler moves it back if they all go away).
    return "gpu" if gpu_worker_alive(session) else "cpu"


def check_job(*, session: Session, settings: Settings, owner: Owner, spec: JobSpec) -> str:
    """Everything submit checks about a spec against its dataset, its source job and the
    limits (a 4xx naming the field, nothing written); returns the queue it goes to."""
    info = resolve_dataset(session=session, owner=owner, ref=spec.dataset)
    _check_fits(spec, info)
    if spec.init_from:
        _check_init_from(session, owner, spec, info)
    queue = _queue_for(session, spec)
    _check_memory(spec, info, queue, settings)
    check_resources(session, settings, spec, queue)
    return queue


def check_objective(*, session: Session, owner: Owner, spec: JobSpec, field: str,
                    metric: str) -> None:
    """422 on `field` unless every epoch of a job of this spec records `metric`."""
    info = resolve_dataset(session=session, owner=owner, ref=spec.dataset)
    check_recorded(field, metric, spec.model.arch, *_split(spec, info))


def create_job(*, session: Session, sender: Celery, settings: Settings, owner: Owner,
               spec: JobSpec, idempotency_key: str | None) -> tuple[Job, bool]:
    """Record the job, then send its wake-up call. Returns (job, created)."""
    if idempotency_key:
        existing = session.execute(select(Job).where(
            Job.owner_id == owner.id, Job.idempotency_key == idempotency_key)).scalar_one_or_none()
        if existing is not None:
            return existing, False
    queue = check_job(session=session, settings=settings, owner=owner, spec=spec)
    active = session.execute(select(func.count()).select_from(Job).where(
        Job.owner_id == owner.id, Job.status.in_(ACTIVE))).scalar_one()
    if active >= settings.max_queued_jobs_per_owner:
        raise OverLimit(f"{active} jobs are queued or running; the limit is "
                       f"{settings.max_queued_jobs_per_owner}", headers={"Retry-After": "30"})
    check_scheduling(session, owner, spec)
    job = Job(owner_id=owner.id, name=spec.name, spec=spec.model_dump(mode="json"),
              dataset_ref=spec.dataset, queue=queue, priority=Priority.named(spec.priority),
              preemptible=spec.preemptible, nodes=spec.resources.nodes,
              procs_per_node=spec.resources.procs_per_node,
              epochs=spec.training.progress_total, idempotency_key=idempotency_key,
              # Claimed for this send (core/dispatch.py), so that no resend races it.
              sent_at=utcnow())
    lifecycle.submit(session, job)
    try:
        session.flush()
        # The dataset, checked again and held in the transaction that records the job: a
        # delete racing this submit either waits for the job (then 409) or wins (then 404).
        if not spec.dataset.startswith("builtin:") and not lock_for_job(session, spec.dataset):
            session.rollback()
            raise not_found("dataset")
        session.commit()
    except IntegrityError:  # the same Idempotency-Key, sent twice at once
        session.rollback()
        existing = session.execute(select(Job).where(
            Job.owner_id == owner.id, Job.idempotency_key == idempotency_key)).scalar_one()
        return existing, False
    # The row is the record; a failed send leaves the job queued with its waiting_reason,
    # and core/dispatch.py sends it again once the broker answers, never the client.
    send_new(session, sender, job.id, job.queue, job.nodes)
    session.refresh(job)
    return job, True


def get_job(*, session: Session, owner: Owner, job_id: str) -> Job:
    job = session.execute(scoped(select(Job).where(Job.id == job_id), owner, Job.owner_id)
                          ).scalar_one_or_none()
    if job is None:
        raise not_found("job")
    return job


def list_jobs(*, session: Session, owner: Owner, status: str | None, limit: int,
              cursor: str | None) -> tuple[list[Job], str | None]:
    query = scoped(select(Job), owner, Job.owner_id)
    if status:
        query = query.where(Job.status == status)
    return newest_first(session, query, Job.id, limit, cursor)


def model_ids(session: Session, jobs: list[Job]) -> dict[str, str]:
    if not jobs:
        return {}
    rows = session.execute(select(TrainedModel.job_id, TrainedModel.id).where(
        TrainedModel.job_id.in_([j.id for j in jobs])))
    return dict(rows.tuples().all())


def steps_mode(job: Job) -> bool:
    """Whether the job counts steps (training.max_steps): its `epoch` columns hold steps."""
    return bool(job.spec.get("training", {}).get("max_steps"))


def progress(job: Job) -> Progress:
    fraction = round(job.epoch / job.epochs, 6) if job.epochs else 0.0
    if not steps_mode(job):
        return Progress(epoch=job.epoch, epochs=job.epochs, fraction=fraction)
    return Progress(unit="step", epoch=job.epoch, epochs=job.epochs, step=job.epoch,
                    max_steps=job.epochs, fraction=fraction)


def to_outs(session: Session, jobs: list[Job], max_attempts: int | None = None
            ) -> list[JobOut]:
    """The jobs as the API shows them: with their models, their members, and (given
    `max_attempts`, for views that show queue places) why a queued one waits."""
    ids = model_ids(session, jobs)
    places = places_of(session, jobs, max_attempts) if max_attempts is not None else {}
    members = gangs.job_members(session, jobs)
    reasons = gangs.waiting_reasons(session, jobs)
    return [to_out(job, ids.get(job.id), places.get(job.id), members.get(job.id, []),
                   reasons.get(job.id)) for job in jobs]


def to_out(job: Job, model_id: str | None, place: Place | None = None,
           members: list[gangs.Member] | None = None, gang_reason: str | None = None) -> JobOut:
    queued = job.status == JobStatus.QUEUED
    return JobOut(
        id=job.id, name=job.name, status=job.status, spec=job.spec,  # type: ignore[arg-type]
        progress=progress(job),
        metrics=job.latest_metrics, attempts=job.attempts, error=job.error,
        waiting_reason=(job.waiting_reason or (place.reason if place else None)
                        or gang_reason) if queued else None,
        queue_position=place.position if queued and place else None,
        priority=Priority(job.priority).name.lower(), preemptions=job.preemptions,
        usage=Usage(device_seconds=round(job.device_seconds, 3), examples=job.examples),
        failure_kind=job.failure_kind, model_id=model_id,
        device=job.device_used, queue=job.queue, cancel_requested=job.cancel_requested,
        sweep_id=job.sweep_id,
        members=[MemberOut(**vars(member)) for member in members or []],
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at)


def cancel_job(*, session: Session, owner: Owner, job_id: str) -> Job:
    job = get_job(session=session, owner=owner, job_id=job_id)
    if not lifecycle.request_cancel(session, job.id):
        session.rollback()
        raise conflict(f"the job is already {job.status}")
    # A queued job ends here; a running one ends when its worker next looks (it checkpoints).
    lifecycle.cancel_queued(session, job.id)
    session.commit()
    session.refresh(job)
    return job


def job_metrics(*, session: Session, owner: Owner, job_id: str) -> list[dict[str, Any]]:
    job = get_job(session=session, owner=owner, job_id=job_id)
    rows = session.execute(select(EpochMetric.epoch, EpochMetric.values)
                           .where(EpochMetric.job_id == job.id).order_by(EpochMetric.epoch))
    return [{"epoch": epoch, **values} for epoch, values in rows]


def job_checkpoints(*, session: Session, owner: Owner, job_id: str) -> list[CheckpointOut]:
    job = get_job(session=session, owner=owner, job_id=job_id)
    rows = session.execute(select(Checkpoint).where(Checkpoint.job_id == job.id)
                           .order_by(Checkpoint.epoch)).scalars()
    steps = steps_mode(job)
    return [CheckpointOut.model_validate(row, from_attributes=True).model_copy(
        update={"step": row.epoch if steps else None}) for row in rows]


# -- Deleting: rows first, in one transaction; their objects after the commit. A crash (or a
# store that fails) in between leaves objects no row names, which `trainserve gc` removes;
# never a row without its object.


def model_user(session: Session, job: Job) -> str | None:
    """An active job of the same owner that starts from this job's model (`init_from` is
    the owner's own job, checked at submit), if any: its weights are still needed."""
    rows = session.execute(select(Job.id, Job.spec).where(
        Job.owner_id == job.owner_id, Job.status.in_(ACTIVE), Job.id != job.id))
    return next((other for other, spec in rows if spec.get("init_from") == job.id), None)


def check_deletable(session: Session, job: Job, refuses: Callable[[Session, str], str | None],
                    model_id: str | None) -> None:
    """409 while the job is queued or running, while another job will start from its
    model, or when `refuses` (the registry's guard) has a reason to keep its model."""
    reason = None
    if job.status in ACTIVE:
        reason = f"the job is {job.status}; cancel it or let it finish first"
    elif (user := model_user(session, job)) is not None:
        reason = f"job {user} starts from this job's model (init_from); cancel it first"
    elif model_id is not None:
        reason = refuses(session, model_id)
    if reason is not None:
        session.rollback()
        raise conflict(reason)


def remove_objects(store: Store, keys: Iterable[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except StoreError as exc:  # committed already: gc removes it later
            log.warning("could not remove %s from the store (trainserve gc will): %s", key, exc)


def delete_job(*, session: Session, store: Store, owner: Owner, job_id: str,
               refuses: Callable[[Session, str], str | None]) -> None:
    """A finished job goes with its metrics, checkpoints and model, and their objects;
    `refuses` is the registry's guard on its model (409 with its reason)."""
    job = get_job(session=session, owner=owner, job_id=job_id)
    # PostgreSQL: hold the row, so that its status read below is the one we delete under.
    session.execute(select(Job.id).where(Job.id == job.id).with_for_update())
    session.refresh(job)
    model_id = session.execute(select(TrainedModel.id).where(TrainedModel.job_id == job.id)
                               ).scalar_one_or_none()
    check_deletable(session, job, refuses, model_id)
    keys = list(session.execute(select(Checkpoint.path).where(Checkpoint.job_id == job.id))
                .scalars())
    try:
        session.execute(delete(TrainedModel).where(TrainedModel.job_id == job.id))
        # Metrics and checkpoints go by the foreign keys' ON DELETE CASCADE.
        deleted = session.execute(delete(Job).where(Job.id == job.id, Job.status.in_(TERMINAL))
                                  .execution_options(synchronize_session=False)).rowcount
        if not deleted:
            session.rollback()
            raise not_found("job")
        session.commit()
    except IntegrityError:  # a version registered on its model meanwhile
        session.rollback()
        raise conflict((model_id and refuses(session, model_id)) or "its model is in use"
                       ) from None
    remove_objects(store, keys)
