"""Sweeps' searcher on rebuilt studies: the space against a spec, seeded sampling, and the
pruner asked epoch by epoch from rows (core/sweeps/)."""

import math
from typing import Any

import pytest
from pydantic import ValidationError

from core.lifecycle import JobStatus
from core.sweeps import space, study
from core.sweeps.spec import SweepSpec
from models.spec import JobSpec

BASE = JobSpec.model_validate({
    "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [64]},
    "optimizer": {"name": "adadelta"}, "training": {"epochs": 20}}).model_dump(mode="json")


def sweep(**changes: Any) -> SweepSpec:
    body = {"base": BASE, "space": {
        "optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 3.0},
        "optimizer.rho": {"type": "uniform", "low": 0.8, "high": 0.99},
        "model.hidden_sizes": {"type": "categorical", "values": [[64], [256, 256]]}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "max_trials": 12, "max_concurrent": 2, "sampler": "tpe",
        "pruner": {"name": "asha", "min_epochs": 1, "reduction_factor": 3}}
    return SweepSpec.model_validate({**body, **changes})


def run_trials(spec: SweepSpec, curve_of: Any, n: int) -> list[study.TrialRecord]:
    """n trials, made one after another, each run to its end with the curve `curve_of`
    gives its parameters, asking the pruner as a worker does (its answer ignored here, the
    rungs it notes kept)."""
    records: list[study.TrialRecord] = []
    for number in range(n):
        params, attrs = study.ask(spec, records, epochs=20)
        curve = curve_of(params)
        running = study.TrialRecord(number, params, JobStatus.RUNNING, attrs, curve)
        for epoch in curve:
            _, running.system_attrs = study.prune(spec, [*records, running], number=number,
                                                  since=epoch - 1, epochs=20)
        records.append(study.TrialRecord(number=number, params=params, status=JobStatus.SUCCEEDED,
                                         system_attrs=running.system_attrs, intermediate=curve,
                                         value=curve[max(curve)]))
    return records


def toy_curve(params: dict[str, Any]) -> dict[int, float]:
    """Better for lr near 0.5, rising with epochs."""
    top = 0.99 - 0.1 * abs(math.log(params["optimizer.lr"] / 0.5))
    return {e: top * (1 - 0.5 ** e) for e in range(1, 21)}


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_the_same_history_and_seed_sample_the_same_trials(sampler: str) -> None:
    first = run_trials(sweep(sampler=sampler), toy_curve, 6)
    again = run_trials(sweep(sampler=sampler), toy_curve, 6)
    assert [r.params for r in first] == [r.params for r in again]
    other = run_trials(sweep(sampler=sampler, seed=7), toy_curve, 6)
    assert [r.params for r in first] != [r.params for r in other]
    for record in first:
        assert 0.01 <= record.params["optimizer.lr"] <= 3.0
        assert record.params["model.hidden_sizes"] in ([64], [256, 256])


def test_grid_visits_every_point_once() -> None:
    spec = sweep(sampler="grid", space={
        "training.batch_size": {"type": "int", "low": 32, "high": 96, "step": 32},
        "model.hidden_sizes": {"type": "categorical", "values": [[64], [128]]}})
    records = run_trials(spec, lambda p: {1: 0.5}, 6)
    points = {(r.params["training.batch_size"], tuple(r.params["model.hidden_sizes"]))
              for r in records}
    assert len(points) == 6 == space.grid_size(spec.space)


def test_asha_prunes_a_trial_behind_the_others_at_a_rung_and_keeps_the_rungs() -> None:
    spec = sweep()
    records = run_trials(spec, toy_curve, 3)
    # Completed trials carry the rungs they passed (their runs asked the pruner too).
    assert "completed_rung_0" in records[0].system_attrs
    bad = study.TrialRecord(3, records[0].params, JobStatus.RUNNING,
                            intermediate={1: 0.01, 2: 0.02, 3: 0.03})
    pruned, attrs = study.prune(spec, [*records, bad], number=3, since=0, epochs=20)
    assert pruned and attrs["completed_rung_0"] == 0.01
    good = study.TrialRecord(3, records[0].params, JobStatus.RUNNING,
                             intermediate={1: 0.99, 2: 0.995})
    assert study.prune(spec, [*records, good], number=3, since=0, epochs=20)[0] is False


def test_the_pruner_is_asked_per_epoch_not_once_for_the_last() -> None:
    """Epochs recorded in one batch are each shown to ASHA in order: a trial weak at its
    first rung is pruned there even if it caught up by the last epoch of the batch."""
    spec = sweep()
    records = [study.TrialRecord(n, {"optimizer.lr": 0.1, "optimizer.rho": 0.9,
                                     "model.hidden_sizes": [64]}, JobStatus.SUCCEEDED,
                                 {"completed_rung_0": 0.9}, {1: 0.9}, 0.9) for n in range(3)]
    late = study.TrialRecord(3, records[0].params, JobStatus.RUNNING,
                             intermediate={1: 0.1, 2: 0.95, 3: 0.99})
    assert study.prune(spec, [*records, late], number=3, since=0, epochs=20)[0] is True
    # Asked only from epoch 2 on (epoch 1 checked earlier and its rung kept): no rung 0 again.
    late.system_attrs = {"completed_rung_0": 0.95}
    assert study.prune(spec, [*records, late], number=3, since=1, epochs=20)[0] is False


@pytest.mark.parametrize("name", ["hyperband", "median", "none"])
def test_every_pruner_runs_on_a_rebuilt_study(name: str) -> None:
    spec = sweep(pruner={"name": name, "min_epochs": 2, "reduction_factor": 3})
    records = run_trials(spec, toy_curve, 6)
    bad = study.TrialRecord(6, records[0].params, JobStatus.RUNNING,
                            intermediate={e: 0.01 for e in range(1, 19)})
    pruned, _ = study.prune(spec, [*records, bad], number=6, since=0, epochs=20)
    assert pruned is (name != "none")


def test_failed_pruned_and_running_trials_rebuild() -> None:
    spec = sweep()
    params = {"optimizer.lr": 0.1, "optimizer.rho": 0.9, "model.hidden_sizes": [256, 256]}
    records = [study.TrialRecord(0, params, JobStatus.FAILED),
               study.TrialRecord(1, params, JobStatus.PRUNED, intermediate={1: 0.3}),
               study.TrialRecord(2, params, JobStatus.CANCELLED, intermediate={1: 0.3}),
               study.TrialRecord(3, params, JobStatus.SUCCEEDED, intermediate={1: math.nan},
                                 value=math.nan),
               study.TrialRecord(4, params, JobStatus.RUNNING, intermediate={1: 0.5})]
    rebuilt = study.rebuild(spec, records, number=5, epochs=20)
    assert [t.state.name for t in rebuilt.trials] == ["FAIL", "PRUNED", "FAIL", "FAIL",
                                                      "RUNNING"]
    assert rebuilt.trials[1].params["model.hidden_sizes"] == 1  # by index
    params5, _ = study.ask(spec, records, epochs=20)
    assert set(params5) == set(spec.space)


# -- the space against the spec ------------------------------------------------------------

def test_apply_sets_dotted_paths_in_a_copy() -> None:
    spec = space.apply(BASE, {"optimizer.lr": 0.5, "model.hidden_sizes": [8, 8]})
    assert spec["optimizer"]["lr"] == 0.5 and spec["model"]["hidden_sizes"] == [8, 8]
    assert BASE["optimizer"]["lr"] == 0.1


@pytest.mark.parametrize("path", ["optimizer.lrr", "model.hidden_sizes.x", "nothing",
                                  "training.early_stopping.patience", "optimizer.momentum"])
def test_unknown_paths_are_refused(path: str) -> None:
    with pytest.raises(space.SpaceError) as info:
        space.check_paths(BASE, sweep(space={path: {"type": "uniform", "low": 0, "high": 1}}
                                      ).space)
    assert info.value.field == path and "unknown path" in info.value.message


def test_probes_are_each_ends_and_every_value() -> None:
    spec = sweep(space={"training.batch_size": {"type": "int", "low": 32, "high": 100,
                                                "step": 32},
                        "model.hidden_sizes": {"type": "categorical", "values": [[1], [2]]}})
    assert list(space.probes(spec.space)) == [("training.batch_size", 32),
                                              ("training.batch_size", 96),
                                              ("model.hidden_sizes", [1]),
                                              ("model.hidden_sizes", [2])]


@pytest.mark.parametrize("changes, field", [
    ({"space": {"optimizer.lr": {"type": "uniform", "low": 2, "high": 1}}}, "low"),
    ({"space": {"optimizer.lr": {"type": "loguniform", "low": 0, "high": 1}}}, "low > 0"),
    ({"space": {"model.hidden_sizes": {"type": "categorical", "values": []}}}, "values"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"max_trials": 0}, "max_trials"),
    ({"sampler": "bayes"}, "sampler"),
    ({"pruner": {"name": "asha", "reduction_factor": 1}}, "reduction_factor"),
    ({"space": {}}, "space"),
    ({"space": {"Optimizer.LR": {"type": "uniform", "low": 0, "high": 1}}}, "space"),
])
def test_malformed_sweeps_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        sweep(**changes)
    assert field in str(info.value)


def test_grid_needs_discrete_dimensions() -> None:
    with pytest.raises(space.SpaceError) as info:
        space.grid(sweep().space)
    assert info.value.field == "optimizer.lr"


def test_a_grid_too_large_is_refused_before_it_is_built() -> None:
    spec = sweep(space={"training.seed": {"type": "int", "low": 0, "high": 2**31 - 1},
                        "training.batch_size": {"type": "int", "low": 1, "high": 64}})
    with pytest.raises(space.SpaceError) as info:
        space.grid(spec.space)
    assert info.value.field == "space"


def test_infinite_bounds_are_refused() -> None:
    with pytest.raises(ValidationError):
        sweep(space={"optimizer.lr": {"type": "uniform", "low": "-Infinity", "high": 1}})
