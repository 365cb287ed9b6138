"""Sweeps: the rules. Routes call these with keyword arguments; every query is owner-scoped.

A sweep is checked whole before anything is stored: its base spec as a job would be, each
space path against that spec, each range's ends and each categorical value set into it one
at a time (as the spec and submit's checks would take them), and its objective against the
metrics such a job records. Any of these failing is a 422 naming the field."""

from collections.abc import Iterator
from typing import Any

from celery import Celery
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.errors import Invalid, conflict, not_found
from app.jobs.service import check_job, check_objective, scoped
from app.sweeps.schemas import TRIAL_STATUS, BestOut, EpochsOut, SweepOut, TrialOut, TrialStatus
from core import lifecycle
from core.config import Settings
from core.db.pages import newest_first
from core.db.tables import Owner, Sweep
from core.lifecycle import ACTIVE
from core.sweeps import driver, records, space
from core.sweeps.spec import SweepSpec
from models.spec import JobSpec


def _invalid(loc: list[str], message: str) -> Invalid:
    return Invalid([{"loc": ["body", *loc], "msg": message, "type": "value_error"}])


def _errors_under(prefix: list[str], exc: ValidationError | Invalid) -> Invalid:
    """A 422 about a spec, moved under the sweep field it came from."""
    items = exc.errors() if isinstance(exc, ValidationError) else exc.detail
    assert isinstance(items, list)
    return Invalid([{"loc": ["body", *prefix, *[p for p in item["loc"] if p != "body"]],
                     "msg": item["msg"], "type": item.get("type", "value_error")}
                    for item in items])


def _probe_specs(base: dict[str, Any], body: SweepSpec) -> Iterator[tuple[str, Any, JobSpec]]:
    """Each range end and categorical value set alone into the base spec, validated."""
    for path, value in space.probes(body.space):
        try:
            yield path, value, JobSpec.model_validate(space.apply(base, {path: value}))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise _invalid(["space", path], f"the spec refuses {value!r} here ({where}: "
                           f"{error['msg']})") from exc


def check_sweep(*, session: Session, settings: Settings, owner: Owner,
                body: SweepSpec) -> dict[str, Any]:
    """The whole sweep checked (422 naming the field, nothing written); returns the base
    spec with its defaults filled in."""
    try:
        base_spec = JobSpec.model_validate(body.base)
    except ValidationError as exc:
        raise _errors_under(["base"], exc) from exc
    try:
        check_job(session=session, settings=settings, owner=owner, spec=base_spec)
    except Invalid as exc:
        raise _errors_under(["base"], exc) from exc
    base = base_spec.model_dump(mode="json")
    try:
        space.check_paths(base, body.space)
        if body.sampler == "grid":
            space.grid(body.space)
    except space.SpaceError as exc:
        raise _invalid(["space", exc.field] if exc.field != "space" else ["space"],
                       exc.message) from exc
    for path, value, spec in _probe_specs(base, body):
        try:
            check_job(session=session, settings=settings, owner=owner, spec=spec)
        except Invalid as exc:
            detail = exc.detail[0]["msg"] if isinstance(exc.detail, list) else exc.detail
            raise _invalid(["space", path], f"{value!r} is refused: {detail}") from exc
    check_objective(session=session, owner=owner, spec=base_spec, field="objective.metric",
                    metric=body.objective.metric)
    return base


def create_sweep(*, session: Session, sessions: sessionmaker[Session], sender: Celery,
                 settings: Settings, owner: Owner, body: SweepSpec) -> Sweep:
    """Record the sweep, then make and send its first trials (any process's driver would
    make them soon anyway: the API's loop and every worker's reconciler drive sweeps)."""
    base = check_sweep(session=session, settings=settings, owner=owner, body=body)
    sweep = Sweep(owner_id=owner.id, name=body.name,
                  spec={**body.model_dump(mode="json"), "base": base})
    lifecycle.submit_sweep(session, sweep)
    session.commit()
    driver.advance(sessions, sender, sweep.id)
    session.refresh(sweep)
    return sweep


def get_sweep(*, session: Session, owner: Owner, sweep_id: str) -> Sweep:
    sweep = session.execute(scoped(select(Sweep).where(Sweep.id == sweep_id), owner,
                                   Sweep.owner_id)).scalar_one_or_none()
    if sweep is None:
        raise not_found("sweep")
    return sweep


def list_sweeps(*, session: Session, owner: Owner, limit: int,
                cursor: str | None) -> tuple[list[Sweep], str | None]:
    return newest_first(session, scoped(select(Sweep), owner, Sweep.owner_id), Sweep.id,
                        limit, cursor)


def cancel_sweep(*, session: Session, owner: Owner, sweep_id: str) -> Sweep:
    """No trial is made after this; queued trials end now, running ones at their next batch
    (they checkpoint), as a job's cancel does."""
    sweep = get_sweep(session=session, owner=owner, sweep_id=sweep_id)
    if not lifecycle.cancel_sweep(session, sweep.id):
        session.rollback()
        raise conflict(f"the sweep is already {sweep.status}")
    for _, job in records.trial_rows(session, sweep.id):
        if job.status in ACTIVE and lifecycle.request_cancel(session, job.id):
            lifecycle.cancel_queued(session, job.id)
    session.commit()
    session.refresh(sweep)
    return sweep


def _best(spec: SweepSpec, trials: list[TrialOut], models: dict[str, str]) -> BestOut | None:
    done = [t for t in trials if t.status == TrialStatus.COMPLETED and t.value is not None]
    if not done:
        return None
    pick = max if spec.objective.direction == "maximize" else min
    best = pick(done, key=lambda t: t.value or 0.0)
    assert best.value is not None
    return BestOut(job_id=best.job_id, model_id=models.get(best.job_id), params=best.params,
                   value=best.value)


def to_out(session: Session, sweep: Sweep) -> SweepOut:
    spec = SweepSpec.model_validate(sweep.spec)
    metric = spec.objective.metric
    rows = records.trial_rows(session, sweep.id)
    ids = [job.id for _, job in rows]
    curves, models = records.curves(session, ids, metric), records.ready_models(session, ids)
    trials = [TrialOut(number=trial.number, job_id=job.id, params=trial.params,
                       status=TRIAL_STATUS[job.status], epochs=job.epoch, error=job.error,
                       value=records.final_value(job, metric, curves[job.id],
                                                 models.get(job.id)))
              for trial, job in rows]
    return SweepOut(
        id=sweep.id, name=sweep.name, status=sweep.status, error=sweep.error,  # type: ignore[arg-type]
        spec=sweep.spec, trials=trials,
        best=_best(spec, trials, {job_id: model[0] for job_id, model in models.items()}),
        epochs=EpochsOut(run=sum(t.epochs for t in trials),
                         budget=spec.max_trials * spec.base["training"]["epochs"]),
        created_at=sweep.created_at, finished_at=sweep.finished_at)
