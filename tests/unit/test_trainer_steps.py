"""Step-based training (`training.max_steps`, `eval_every`): rows at steps, exact stops and
exact resumption at any step, across epoch boundaries."""

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from models import checkpoint as ckpt
from models.data import load_builtin
from models.spec import JobSpec, TrainingSpec
from tests.unit.recording_callbacks import RecordingCallbacks
from workers.train_state import Resume
from workers.trainer import Trainer

CPU = torch.device("cpu")
# 1,438 training digits in batches of 64: 23 steps an epoch, the last one of 30 examples.
PER_EPOCH = 23

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate({
        "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"batch_size": 64, "seed": 4, **training}})


def _trainer(spec: JobSpec) -> Trainer:
    return Trainer(spec, load_builtin("digits"), CPU)


def test_max_steps_stops_exactly_with_a_row_every_eval_every() -> None:
    trainer = _trainer(_spec(max_steps=50, eval_every=20))
    hooks = RecordingCallbacks()
    assert trainer.run(hooks) == "succeeded"
    assert hooks.checks == 50  # one stop check before each step, and no step more
    assert [e for e, _ in hooks.epochs] == [20, 40, 50]
    rows = [m for _, m in hooks.epochs]
    assert [m["step"] for m in rows] == [20, 40, 50]
    assert [m["epoch"] for m in rows] == pytest.approx([20 / PER_EPOCH, 40 / PER_EPOCH,
                                                         50 / PER_EPOCH])
    assert all("val_loss" in m and m["steps_per_s"] > 0 for m in rows)
    assert hooks.checkpoints[-1][0] == 50 and trainer.model_epoch == 50


def test_default_eval_every_is_a_tenth() -> None:
    assert TrainingSpec(max_steps=95).eval_every == 10
    trainer = _trainer(_spec(max_steps=25))
    hooks = RecordingCallbacks()
    trainer.run(hooks)
    assert [e for e, _ in hooks.epochs] == [3, 6, 9, 12, 15, 18, 21, 24, 25]


@pytest.mark.parametrize(("training", "message"), [
    ({"max_steps": 10, "epochs": 2}, "epochs or max_steps, not both"),
    ({"eval_every": 5}, "needs max_steps"),
    ({"max_steps": 10, "eval_every": 11}, "more than max_steps"),
    ({"max_steps": 0}, "greater than or equal to 1"),
])
def test_step_options_are_checked(training: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingSpec(**training)


def test_step_rows_match_epoch_rows_at_epoch_boundaries() -> None:
    """Steps are the epochs' batches in the epochs' order: a step run's weights after two
    epochs of steps are an epoch run's after two epochs."""
    by_epochs = _trainer(_spec(epochs=2))
    by_epochs.run(RecordingCallbacks())
    by_steps = _trainer(_spec(max_steps=2 * PER_EPOCH, eval_every=PER_EPOCH))
    hooks = RecordingCallbacks()
    by_steps.run(hooks)
    assert [m["epoch"] for _, m in hooks.epochs] == [1.0, 2.0]
    for name, value in by_epochs.model.state_dict().items():
        assert torch.equal(value, by_steps.model.state_dict()[name]), name


@pytest.mark.parametrize("stop_after", [7, 20 + 9, 2 * PER_EPOCH + 1],
                         ids=["first-round", "across-an-epoch", "later"])
def test_a_stop_at_any_step_resumes_exactly(stop_after: int) -> None:
    spec = _spec(max_steps=60, eval_every=20, checkpoint_every=10, l2=0.001)
    whole = _trainer(spec)
    whole_hooks = RecordingCallbacks()
    assert whole.run(whole_hooks) == "succeeded"

    stopped = _trainer(spec)
    hooks = RecordingCallbacks("shutdown", stop_after=stop_after)
    assert stopped.run(hooks) == "shutdown"
    key, tensors, meta = hooks.checkpoints[-1]
    assert key == stop_after // 20 * 20 and meta["partial"]
    assert meta["position"]["step"] == stop_after
    tensors, meta = ckpt.decode(ckpt.encode(tensors, meta))

    torch.manual_seed(999)  # whatever the process did in between
    resumed = _trainer(spec)
    resumed.restore(Resume(epoch=key, tensors=tensors, meta=meta))
    resumed_hooks = RecordingCallbacks()
    assert resumed.run(resumed_hooks) == "succeeded"
    assert resumed_hooks.checks == 60 - stop_after
    assert [e for e, _ in resumed_hooks.epochs] == [e for e, _ in whole_hooks.epochs if e > key]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for metric in ("train_loss", "train_accuracy", "val_loss"):
        assert [m[metric] for e, m in whole_hooks.epochs if e > key] == [
            m[metric] for _, m in resumed_hooks.epochs], metric


def test_eval_batches_bounds_validation_to_evenly_spaced_examples() -> None:
    trainer = _trainer(_spec(max_steps=1))
    assert trainer.val_set is not None and len(trainer.val_set) == 359
    whole = trainer.evaluate(trainer.val_set)
    assert trainer.evaluate(trainer.val_set, limit=1) == whole  # 1,024 > 359: all of it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("workers.trainer.EVAL_BATCH", 100)
        part = trainer.evaluate(trainer.val_set, limit=1)
        assert part != whole and part == trainer.evaluate(trainer.val_set, limit=1)
