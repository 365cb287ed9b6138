"""What happens between epochs: the learning-rate schedule and early stopping.

Both keep their state in plain numbers so that a checkpoint can carry it as JSON.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.spec import (
    CosineSchedule,
    EarlyStopping,
    PlateauSchedule,
    ScheduleSpec,
    StepSchedule,
    higher_is_better,
)

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def make_scheduler(spec: ScheduleSpec | None, optimizer: torch.optim.Optimizer,
                   epochs: int) -> Scheduler | None:
    if spec is None:
        return None
    if isinstance(spec, StepSchedule):
        return torch.optim.lr_scheduler.StepLR(optimizer, spec.step_size, spec.gamma)
    if isinstance(spec, CosineSchedule):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.t_max or epochs,
                                                          spec.eta_min)
    assert isinstance(spec, PlateauSchedule)
    mode = "max" if higher_is_better(spec.metric) else "min"
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=spec.factor,
                                                      patience=spec.patience)


def step_scheduler(scheduler: Scheduler | None, spec: ScheduleSpec | None,
                   metrics: dict[str, float]) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        assert isinstance(spec, PlateauSchedule)
        scheduler.step(metric_value(metrics, spec.metric))
    else:
        scheduler.step()


def metric_value(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise KeyError(f"metric {name!r} is not recorded for this job (is there a validation "
                       "split?)")
    return metrics[name]


@dataclass
class Stopper:
    """Early stopping: remembers the best epoch and how long since it improved."""

    metric: str
    patience: int
    min_delta: float
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0

    @classmethod
    def from_spec(cls, spec: EarlyStopping | None) -> "Stopper | None":
        if spec is None:
            return None
        return cls(metric=spec.metric, patience=spec.patience, min_delta=spec.min_delta)

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch; True if it is the new best."""
        value = metric_value(metrics, self.metric)
        sign = 1.0 if higher_is_better(self.metric) else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta or (
                math.isnan(self.best)):
            self.best, self.best_epoch, self.stale = value, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def state(self) -> dict[str, Any]:
        return asdict(self)
