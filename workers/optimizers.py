"""Optimizer names to torch classes; the spec's fields are the constructor's arguments."""

from collections.abc import Iterable

import torch

from models.spec import OptimizerSpec

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer(
    spec: OptimizerSpec, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    # torch's Adadelta is the seed's rule term for term (tests/unit/test_optimizers.py).
    return OPTIMIZERS[spec.name](params, **spec.model_dump(exclude={"name"}))
