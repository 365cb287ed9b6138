"""The search space against the base spec: Optuna distributions, the parameters a trial
gets set into its spec, and the checks that make a bad space a 422 before anything runs.

Optuna's categorical choices must be plain scalars, and a value here may be a list
(`model.hidden_sizes`): the study sees each categorical by its index, and trainserve's rows
keep the values themselves (`internal` and `external` convert)."""

import copy
import math
from collections.abc import Iterator
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from core.sweeps.spec import Categorical, Dimension, FloatRange, IntRange

MAX_GRID = 100_000


class SpaceError(ValueError):
    """A space the base spec cannot take; `field` names the entry at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def distribution(dim: Dimension) -> BaseDistribution:
    if isinstance(dim, FloatRange):
        return FloatDistribution(dim.low, dim.high, log=dim.type == "loguniform")
    if isinstance(dim, IntRange):
        high = dim.low + (dim.high - dim.low) // dim.step * dim.step
        return IntDistribution(dim.low, high, log=dim.log, step=dim.step)
    return CategoricalDistribution(tuple(range(len(dim.values))))


def distributions(space: dict[str, Dimension]) -> dict[str, BaseDistribution]:
    return {path: distribution(dim) for path, dim in space.items()}


def internal(space: dict[str, Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the study holds them (categoricals by index)."""
    return {path: space[path].values.index(value) if isinstance(space[path], Categorical)
            else value for path, value in params.items()}


def external(space: dict[str, Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """The study's parameters as a trial's spec takes them."""
    out = {}
    for path, value in params.items():
        dim = space[path]
        out[path] = dim.values[value] if isinstance(dim, Categorical) else value
    return out


def apply(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base spec with each dotted path set to its parameter (a copy)."""
    spec = copy.deepcopy(base)
    for path, value in params.items():
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        node[leaf] = copy.deepcopy(value)
    return spec


def check_paths(base: dict[str, Any], space: dict[str, Dimension]) -> None:
    """Every path names a field of the base spec as submitted with its defaults filled in
    (so `optimizer.rho` only under adadelta, `training.early_stopping.patience` only where
    the base stops early)."""
    for path in space:
        node: Any = base
        for depth, key in enumerate(path.split(".")):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(path.split(".")[:depth]) or "the spec"
                raise SpaceError(path, f"unknown path: {where} has no field '{key}'")
            node = node[key]


def probes(space: dict[str, Dimension]) -> Iterator[tuple[str, Any]]:
    """The values to try one at a time in the base spec: each range's ends, every
    categorical value. Ranges are monotone in what a spec accepts, so their ends stand
    for everything between."""
    for path, dim in space.items():
        if isinstance(dim, Categorical):
            yield from ((path, value) for value in dim.values)
        else:
            dist = distribution(dim)
            assert isinstance(dist, FloatDistribution | IntDistribution)
            yield from ((path, value) for value in dict.fromkeys((dist.low, dist.high)))


def grid(space: dict[str, Dimension]) -> dict[str, list[Any]]:
    """The grid sampler's points, in the study's terms; only discrete dimensions have one."""
    axes: dict[str, range] = {}
    for path, dim in space.items():
        if isinstance(dim, FloatRange):
            raise SpaceError(path, f"the grid sampler needs discrete values; '{dim.type}' "
                             "is continuous: use int with a step, or categorical")
        if isinstance(dim, IntRange) and dim.log:
            raise SpaceError(path, "the grid sampler takes int ranges without log")
        axes[path] = (range(len(dim.values)) if isinstance(dim, Categorical)
                      else range(dim.low, dim.high + 1, dim.step))
    # Counted before any list is made: a range may be astronomically long.
    if math.prod(len(values) for values in axes.values()) > MAX_GRID:
        raise SpaceError("space", f"the grid has more than {MAX_GRID:,} points")
    return {path: list(values) for path, values in axes.items()}


def grid_size(space: dict[str, Dimension]) -> int:
    return math.prod(len(values) for values in grid(space).values())


__all__ = ["SpaceError", "apply", "check_paths", "distributions", "external", "grid",
           "grid_size", "internal", "probes"]
