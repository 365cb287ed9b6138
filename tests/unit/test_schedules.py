"""Learning-rate schedules and early stopping, alone and inside the trainer."""

from typing import Any

import pytest
import torch

from models.checkpoint import decode, encode
from models.data import load_builtin
from models.spec import JobSpec
from tests.unit.recording_callbacks import RecordingCallbacks
from workers.schedules import Stopper
from workers.train_state import Resume
from workers.trainer import Trainer


def spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate({
        "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [32]},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": 64, "checkpoint_every": 100, **training}})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stopper_waits_patience_epochs_without_improvement() -> None:
    stopper = Stopper(metric="val_loss", patience=2, min_delta=0.05)
    assert stopper.update(1, {"val_loss": 1.0})
    assert not stopper.update(2, {"val_loss": 0.97})  # better, but not by min_delta
    assert not stopper.should_stop
    assert not stopper.update(3, {"val_loss": 1.2})
    assert stopper.should_stop and stopper.best_epoch == 1


def test_stopper_maximises_accuracies() -> None:
    stopper = Stopper(metric="val_accuracy", patience=1, min_delta=0.0)
    stopper.update(1, {"val_accuracy": 0.5})
    assert stopper.update(2, {"val_accuracy": 0.6})
    assert stopper.best == 0.6


def test_step_schedule_decays_the_learning_rate() -> None:
    hooks = RecordingCallbacks()
    Trainer(spec(epochs=4, lr_schedule={"name": "step", "step_size": 2, "gamma": 0.5}),
            load_builtin("digits"), torch.device("cpu")).run(hooks)
    # The rate recorded is the one the epoch trained with.
    assert [round(m["lr"], 6) for _, m in hooks.epochs] == [0.1, 0.1, 0.05, 0.05]


def test_early_stopping_ends_the_run_and_the_model_is_the_best_epoch() -> None:
    hooks = RecordingCallbacks()
    # A learning rate so high that validation loss cannot keep improving for long.
    trainer = Trainer(spec(epochs=60, early_stopping={"metric": "val_loss", "patience": 2}),
                      load_builtin("digits"), torch.device("cpu"))
    trainer.optimizer.param_groups[0]["lr"] = 2.0
    assert trainer.run(hooks) == "succeeded"
    ran = hooks.epochs[-1][0]
    assert ran < 60
    best = min(hooks.epochs, key=lambda row: row[1]["val_loss"])[0]
    assert trainer.model_epoch == best
    assert best in [epoch for epoch, _, _ in hooks.checkpoints]
    assert all(meta["is_best"] for e, _, meta in hooks.checkpoints if e == best)
    assert not any("is_best" in m for _, m in hooks.epochs)  # metrics hold measurements only


def test_schedule_and_stopper_state_survive_a_resume() -> None:
    training = {"epochs": 6, "lr_schedule": {"name": "plateau", "patience": 0, "factor": 0.5},
                "early_stopping": {"metric": "val_accuracy", "patience": 50},
                "checkpoint_every": 3}
    whole_hooks = RecordingCallbacks()
    whole = Trainer(spec(**training), load_builtin("digits"), torch.device("cpu"))
    whole.run(whole_hooks)

    first_hooks = RecordingCallbacks()
    Trainer(spec(**{**training, "epochs": 3}), load_builtin("digits"),
            torch.device("cpu")).run(first_hooks)
    epoch, tensors, meta = next(c for c in first_hooks.checkpoints if c[0] == 3)
    tensors, meta = decode(encode(tensors, meta))
    resumed = Trainer(spec(**training), load_builtin("digits"), torch.device("cpu"))
    resumed.restore(Resume(epoch=epoch, tensors=tensors, meta=meta))
    resumed_hooks = RecordingCallbacks()
    resumed.run(resumed_hooks)
    assert [m["lr"] for _, m in resumed_hooks.epochs] == [
        m["lr"] for e, m in whole_hooks.epochs if e > 3]
    assert resumed.stopper == whole.stopper
