"""Every architecture trains one epoch with every optimizer, on tiny data."""

import math
from typing import Any

import numpy as np
import pytest
import torch

from models.data import image_data, text_data
from models.spec import JobSpec
from workers.optimizers import OPTIMIZERS
from workers.trainer import Trainer

ARCHS: dict[str, dict[str, Any]] = {
    "mlp": {"arch": "mlp", "hidden_sizes": [16], "dropout": 0.1},
    "cnn": {"arch": "cnn", "channels": [4, 8], "hidden_sizes": [16], "batch_norm": True},
    "rnn": {"arch": "rnn", "hidden_size": 8, "activation": "relu"},
    "gru": {"arch": "gru", "hidden_size": 8, "num_layers": 2, "dropout": 0.1},
    "lstm": {"arch": "lstm", "hidden_size": 8, "embedding_dim": 4},
}


class Quiet:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def stop_reason(self) -> None:
        return None

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics.append(metrics)

    def on_checkpoint(self, *_: object) -> None:
        pass


def tiny_data(text: bool) -> Any:
    if text:
        return text_data("the quick brown fox jumps over the lazy dog. " * 4, 0.2)
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32)
    return image_data(x, rng.integers(0, 3, 40), ["a", "b", "c"], 0.25)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_trains_with_every_optimizer(arch: str, optimizer: str) -> None:
    text = arch in ("rnn", "gru", "lstm")
    spec = JobSpec.model_validate({
        "dataset": "builtin:hihello" if text else "builtin:digits", "model": ARCHS[arch],
        "optimizer": {"name": optimizer},
        "training": {"epochs": 1, "batch_size": 8, "seq_len": 8, "grad_clip": 1.0}})
    trainer = Trainer(spec, tiny_data(text), torch.device("cpu"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    hooks = Quiet()
    assert trainer.run(hooks) == "succeeded"
    assert math.isfinite(hooks.metrics[0]["train_loss"])
    assert math.isfinite(hooks.metrics[0]["val_loss"])
    changed = [not torch.equal(b, a) for b, a in zip(before, trainer.model.parameters(),
                                                      strict=True)]
    assert any(changed), "one epoch moved no weight"
