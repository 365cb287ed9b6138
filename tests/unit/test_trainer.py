"""The training loop through its callbacks: convergence, metrics, checkpoints, stops, resumes."""

import math
from typing import Any

import pytest
import torch

from models import checkpoint as ckpt
from models import registry
from models.data import load_builtin
from models.spec import JobSpec
from tests.unit.recording_callbacks import RecordingCallbacks
from workers.faults import TrainingError
from workers.train_state import InitialWeights, Resume
from workers.trainer import Trainer

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digits_spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate({
        "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [64]},
        "training": {"batch_size": 64, **training}})


def _trainer(spec: JobSpec) -> Trainer:
    name = spec.dataset.removeprefix("builtin:")
    return Trainer(spec, load_builtin(name, spec.training.validation_fraction), CPU)


# -- the seed's hihello ------------------------------------------------------------------------

def test_lstm_learns_hihello() -> None:
    spec = JobSpec.model_validate({
        "dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
        "optimizer": {"name": "adam", "lr": 0.1},
        "training": {"epochs": 300, "batch_size": 1, "seq_len": 6}})
    trainer = _trainer(spec)
    hooks = RecordingCallbacks()
    assert trainer.run(hooks) == "succeeded"
    assert [e for e, _ in hooks.epochs] == list(range(1, 301))
    last = hooks.epochs[-1][1]
    assert last["train_accuracy"] == 1.0
    assert last["train_loss"] < 0.05
    assert last["train_bpc"] == pytest.approx(last["train_loss"] / math.log(2))
    assert "val_loss" not in last  # hihello holds nothing out

    vocab = trainer.info["vocab"]
    ids = torch.tensor([[vocab.index(c) for c in "hihell"]])
    trainer.model.eval()
    with torch.no_grad():
        logits, _ = trainer.model(ids)
    assert "".join(vocab[i] for i in logits.argmax(-1)[0]) == "ihello"


def test_text_shorter_than_a_window_is_a_training_error() -> None:
    spec = JobSpec.model_validate({"dataset": "builtin:hihello", "model": {"arch": "gru"},
                                   "training": {"seq_len": 7}})
    with pytest.raises(TrainingError):
        _trainer(spec)


# -- digits: metrics and checkpoints -------------------------------------------------------------

def test_digits_mlp_reports_metrics_each_epoch_and_checkpoints_at_interval() -> None:
    spec = _digits_spec(epochs=3, checkpoint_every=2)
    trainer = _trainer(spec)
    hooks = RecordingCallbacks()
    assert trainer.run(hooks) == "succeeded"
    assert [e for e, _ in hooks.epochs] == [1, 2, 3]
    for _, metrics in hooks.epochs:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                    "examples_per_s", "seconds"):
            assert math.isfinite(metrics[key]), key
        assert metrics["seconds"] > 0 and metrics["examples_per_s"] > 0
        assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["train_accuracy"] <= 1
    losses = [m["train_loss"] for _, m in hooks.epochs]
    assert losses[0] < math.log(10) + 1e-6  # starts from the uniform prediction and learns
    assert losses == sorted(losses, reverse=True)

    # every `checkpoint_every` epochs, and at the end
    assert [e for e, _, _ in hooks.checkpoints] == [2, 3]
    for epoch, tensors, meta in hooks.checkpoints:
        assert meta["epoch"] == epoch
        assert meta["metrics"] == dict(hooks.epochs)[epoch]
        assert meta["arch"] == "mlp" and meta["task"] == "classifier"
        assert "rng.torch" in tensors
        ckpt.decode(ckpt.encode(tensors, meta))  # the meta is plain JSON
        model = registry.rebuild(meta["arch"], meta["config"])
        model.load_state_dict(ckpt.strip_prefix("model.", tensors))
    final = hooks.checkpoints[-1][1]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(final[f"model.{name}"], value)


def test_without_checkpoint_every_a_short_run_checkpoints_once_at_the_end() -> None:
    hooks = RecordingCallbacks()
    _trainer(_digits_spec(epochs=3)).run(hooks)
    assert [e for e, _, _ in hooks.checkpoints] == [3]


def test_without_checkpoint_every_checkpoints_come_by_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.trainer.CHECKPOINT_SECONDS", 0.0)
    hooks = RecordingCallbacks()
    _trainer(_digits_spec(epochs=3)).run(hooks)
    assert [e for e, _, _ in hooks.checkpoints] == [1, 2, 3]


def test_evaluation_matches_its_metrics() -> None:
    trainer = _trainer(_digits_spec(epochs=1))
    hooks = RecordingCallbacks()
    trainer.run(hooks)
    val_loss, val_accuracy = trainer.evaluate(trainer.val_set)
    assert hooks.epochs[0][1]["val_loss"] == pytest.approx(val_loss)
    assert hooks.epochs[0][1]["val_accuracy"] == pytest.approx(val_accuracy)
    x, y = trainer.val_set.x, trainer.val_set.y
    with torch.no_grad():
        logits, loss = trainer.model(x, y)
    assert val_accuracy == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert val_loss == pytest.approx(loss.item(), rel=1e-5)


# -- stopping ------------------------------------------------------------------------------------

BATCHES_PER_EPOCH = math.ceil((1797 - 359) / 64)  # 23


def test_cancel_mid_run_returns_cancel_with_one_partial_checkpoint() -> None:
    trainer = _trainer(_digits_spec(epochs=20, checkpoint_every=10))
    hooks = RecordingCallbacks("cancel", stop_after=BATCHES_PER_EPOCH + 5)  # inside epoch 2
    assert trainer.run(hooks) == "cancel"
    assert [e for e, _ in hooks.epochs] == [1]
    assert len(hooks.checkpoints) == 1
    epoch, _, meta = hooks.checkpoints[0]
    assert epoch == 1
    assert meta["partial"] is True
    assert meta["metrics"]["train_loss"] == hooks.epochs[0][1]["train_loss"]


def test_cancel_in_the_first_epoch_still_keeps_the_weights() -> None:
    trainer = _trainer(_digits_spec(epochs=5))
    hooks = RecordingCallbacks("cancel", stop_after=3)
    assert trainer.run(hooks) == "cancel"
    assert hooks.epochs == []
    assert [(e, m["metrics"], m["partial"]) for e, _, m in hooks.checkpoints] == [(0, {}, True)]


def test_a_lost_lease_stops_without_writing_a_checkpoint() -> None:
    trainer = _trainer(_digits_spec(epochs=20, checkpoint_every=10))
    hooks = RecordingCallbacks("lease_lost", stop_after=BATCHES_PER_EPOCH + 5)
    assert trainer.run(hooks) == "lease_lost"
    assert hooks.checkpoints == []


@pytest.mark.parametrize("reason", ["shutdown", "time_limit", "cancel"])
def test_a_mid_epoch_stop_checkpoints_a_position_that_resumes_exactly(reason: str) -> None:
    spec = _digits_spec(epochs=3, checkpoint_every=10, seed=5)
    whole = _trainer(spec)
    whole_hooks = RecordingCallbacks()
    assert whole.run(whole_hooks) == "succeeded"

    stopped = _trainer(spec)
    stopped_hooks = RecordingCallbacks(reason, stop_after=BATCHES_PER_EPOCH + 7)
    assert stopped.run(stopped_hooks) == reason
    epoch, tensors, meta = stopped_hooks.checkpoints[-1]
    assert epoch == 1 and meta["position"]["batch_start"] == 7 * 64
    tensors, meta = ckpt.decode(ckpt.encode(tensors, meta))

    torch.manual_seed(999)
    resumed = _trainer(spec)
    resumed.restore(Resume(epoch=epoch, tensors=tensors, meta=meta))
    resumed_hooks = RecordingCallbacks()
    assert resumed.run(resumed_hooks) == "succeeded"
    assert [e for e, _ in resumed_hooks.epochs] == [2, 3]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for metric in ("train_loss", "train_accuracy"):
        assert [m[metric] for e, m in whole_hooks.epochs if e > 1] == [
            m[metric] for _, m in resumed_hooks.epochs], metric


# -- resuming ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
@pytest.mark.parametrize("via_file", [False, True], ids=["in-memory", "encoded"])
def test_resumed_run_equals_uninterrupted_run(dropout: float, via_file: bool) -> None:
    def spec(epochs: int) -> JobSpec:
        return JobSpec.model_validate({
            "dataset": "builtin:digits",
            "model": {"arch": "mlp", "hidden_sizes": [32], "dropout": dropout},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": epochs, "batch_size": 64, "checkpoint_every": 2, "seed": 3}})

    whole = _trainer(spec(4))
    whole_hooks = RecordingCallbacks()
    assert whole.run(whole_hooks) == "succeeded"

    first = _trainer(spec(2))
    first_hooks = RecordingCallbacks()
    assert first.run(first_hooks) == "succeeded"
    epoch, tensors, meta = first_hooks.checkpoints[-1]
    assert epoch == 2
    if via_file:
        tensors, meta = ckpt.decode(ckpt.encode(tensors, meta))

    torch.manual_seed(12345)  # whatever the process did in between
    resumed = _trainer(spec(4))
    resumed.restore(Resume(epoch=2, tensors=tensors, meta=meta))
    resumed_hooks = RecordingCallbacks()
    assert resumed.run(resumed_hooks) == "succeeded"

    assert [e for e, _ in resumed_hooks.epochs] == [3, 4]
    whole_sd, resumed_sd = whole.model.state_dict(), resumed.model.state_dict()
    assert whole_sd.keys() == resumed_sd.keys()
    for name in whole_sd:
        assert torch.equal(whole_sd[name], resumed_sd[name]), name
    whole_losses = [m["train_loss"] for e, m in whole_hooks.epochs if e > 2]
    assert whole_losses == [m["train_loss"] for _, m in resumed_hooks.epochs]
    # the first two epochs of both runs agree too, so the comparison is not trivially true
    assert [m["train_loss"] for _, m in first_hooks.epochs] == [
        m["train_loss"] for e, m in whole_hooks.epochs if e <= 2]


def test_weights_only_restore_keeps_a_fresh_optimizer_and_epoch() -> None:
    first = _trainer(_digits_spec(epochs=1))
    hooks = RecordingCallbacks()
    first.run(hooks)
    _, tensors, meta = hooks.checkpoints[-1]
    other = _trainer(_digits_spec(epochs=1))
    other.load_weights(InitialWeights(tensors=tensors, meta=meta))
    assert other.epoch == 0
    assert other.optimizer.state_dict()["state"] == {}
    for name, value in first.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[name], value)


# -- divergence ----------------------------------------------------------------------------------

def test_diverging_loss_raises_training_error() -> None:
    spec = JobSpec.model_validate({
        "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [64]},
        "optimizer": {"name": "sgd", "lr": 100}, "training": {"epochs": 2, "l2": 10}})
    hooks = RecordingCallbacks()
    with pytest.raises(TrainingError, match=r"nan|inf"):
        _trainer(spec).run(hooks)
    assert hooks.checkpoints == []  # diverged weights are never kept


def test_nan_loss_raises_training_error(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(_digits_spec(epochs=3))
    forward = trainer.model.forward

    def poisoned(x, targets=None):
        logits, loss = forward(x, targets)
        return logits, loss * float("nan")

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    hooks = RecordingCallbacks()
    with pytest.raises(TrainingError):
        trainer.run(hooks)
    assert hooks.epochs == [] and hooks.checkpoints == []
