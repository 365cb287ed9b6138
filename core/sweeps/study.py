"""Optuna's samplers and pruners on a study rebuilt from trainserve's rows.

Nothing of Optuna's is stored: each decision (the next trial's parameters, whether a
running trial stops) builds an in-memory study from the trials as recorded, asks it, and
returns what the rows must keep (the parameters; the system attributes the searcher wrote,
such as the grid point or the rungs ASHA has seen a trial reach). The sampler is seeded by
the sweep's seed and the trial's number, so the same history gives the same trial.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState, create_trial

from core.lifecycle import JobStatus
from core.sweeps import space as space_
from core.sweeps.spec import SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

# TPE samples at random until this many trials have run, but at most a third of the sweep,
# so that a 12-trial sweep is guided for its last 8 rather than Optuna's default last 2.
TPE_STARTUP_MAX = 10


@dataclass
class TrialRecord:
    """One trial as its rows say: the job's status, the objective's value per epoch, and
    its final value (None while it runs, or if it never produced one)."""

    number: int
    params: dict[str, Any]
    status: str
    system_attrs: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    value: float | None = None


def make_sampler(spec: SweepSpec, number: int) -> BaseSampler:
    seed = spec.seed * 1_000_003 + number
    if spec.sampler == "random":
        return RandomSampler(seed=seed)
    if spec.sampler == "grid":  # its seed shuffles the grid: one order for the whole sweep
        return GridSampler(space_.grid(spec.space), seed=spec.seed)
    startup = max(1, min(TPE_STARTUP_MAX, spec.max_trials // 3))
    # constant_liar: running trials count as bad guesses, so concurrent trials spread out.
    return TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(spec: SweepSpec, epochs: int) -> BasePruner:
    pruner = spec.pruner
    if pruner.name == "asha":
        return SuccessiveHalvingPruner(min_resource=pruner.min_epochs,
                                       reduction_factor=pruner.reduction_factor)
    if pruner.name == "hyperband":
        return HyperbandPruner(min_resource=pruner.min_epochs,
                               max_resource=max(epochs, pruner.min_epochs),
                               reduction_factor=pruner.reduction_factor)
    if pruner.name == "median":
        return MedianPruner(n_warmup_steps=pruner.min_epochs - 1)
    return NopPruner()


def _state(record: TrialRecord) -> tuple[TrialState, float | None]:
    if record.status == JobStatus.SUCCEEDED:
        finite = record.value is not None and math.isfinite(record.value)
        return (TrialState.COMPLETE, record.value) if finite else (TrialState.FAIL, None)
    if record.status == JobStatus.PRUNED:
        return TrialState.PRUNED, None
    if record.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return TrialState.FAIL, None
    return TrialState.RUNNING, None


def _frozen(spec: SweepSpec, record: TrialRecord, dists: dict[str, Any],
            upto: int | None = None) -> FrozenTrial:
    state, value = _state(record)
    values = {epoch: v if math.isfinite(v) else math.nan
              for epoch, v in record.intermediate.items() if upto is None or epoch <= upto}
    return create_trial(state=state, value=value,
                        params=space_.internal(spec.space, record.params),
                        distributions=dists, intermediate_values=values,
                        system_attrs=dict(record.system_attrs))


def rebuild(spec: SweepSpec, records: list[TrialRecord], *, number: int, epochs: int,
            upto: dict[int, int] | None = None) -> optuna.Study:
    """The study as the rows say, its sampler seeded for trial `number`. `upto` holds some
    trials' intermediate values back to an epoch (see prune)."""
    study = optuna.create_study(
        study_name=f"sweep-{spec.seed}", sampler=make_sampler(spec, number),
        pruner=make_pruner(spec, epochs), direction=spec.objective.direction)
    dists = space_.distributions(spec.space)
    for record in sorted(records, key=lambda r: r.number):
        study.add_trial(_frozen(spec, record, dists, (upto or {}).get(record.number)))
    return study


def ask(spec: SweepSpec, records: list[TrialRecord], *, epochs: int
        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next trial's parameters (as its spec takes them) and its system attributes."""
    number = len(records)
    study = rebuild(spec, records, number=number, epochs=epochs)
    trial = study.ask(fixed_distributions=space_.distributions(spec.space))
    assert trial.number == number, (trial.number, number)
    attrs = study._storage.get_trial(trial._trial_id).system_attrs
    return space_.external(spec.space, trial.params), dict(attrs)


def prune(spec: SweepSpec, records: list[TrialRecord], *, number: int, since: int,
          epochs: int) -> tuple[bool, dict[str, Any]]:
    """Whether trial `number` stops, asked as Optuna asks it: once per epoch, in order, for
    each epoch after `since` that it has recorded. Returns the answer and the trial's system
    attributes as the pruner left them."""
    study = rebuild(spec, records, number=number, epochs=epochs, upto={number: since})
    pruner = study.pruner  # Hyperband's brackets are set up on the study it was made for
    storage = study._storage
    trial_id = study.trials[number]._trial_id
    record = next(r for r in records if r.number == number)
    for epoch in sorted(e for e in record.intermediate if e > since):
        value = record.intermediate[epoch]
        storage.set_trial_intermediate_value(trial_id, epoch,
                                             value if math.isfinite(value) else math.nan)
        if pruner.prune(study, storage.get_trial(trial_id)):
            return True, dict(storage.get_trial(trial_id).system_attrs)
    return False, dict(storage.get_trial(trial_id).system_attrs)
