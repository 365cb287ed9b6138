"""Whose fault a failure is (issue 16, item 4): what a job's own spec makes fail is refused
at submit where it can be known, and otherwise fails the job at once as its own fault;
only the run's infrastructure is retried."""

import re
from typing import Any

import pytest
import torch
from sqlalchemy.exc import OperationalError

from models import registry
from models.cnn import CNN, CNNConfig
from models.data import has_validation, load_builtin
from models.spec import (
    CHARACTER_METRICS,
    CLASSIFIER_METRICS,
    METRIC_NAME,
    CNNSpec,
    JobSpec,
    MLPSpec,
    RecurrentSpec,
    watched_metrics,
)
from tests.unit.recording_callbacks import RecordingCallbacks
from workers.faults import TrainingError
from workers.recorder import LeaseLost
from workers.runner import own_fault
from workers.trainer import Trainer
from workers.writer import BackgroundWriter

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def writer():
    writer = BackgroundWriter()
    yield writer
    writer.close()


def _spec(model: dict[str, Any], dataset: str = "builtin:digits", **training: Any) -> JobSpec:
    return JobSpec.model_validate({"dataset": dataset, "model": model,
                                   "training": {"epochs": 2, "batch_size": 64, **training}})


# -- CNN shapes: every kernel size fits every image ---------------------------------------------

@pytest.mark.parametrize("kernel_size", range(1, 12))
@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28], [3, 5, 7], [1, 1, 1], [2, 1, 9]])
def test_a_cnn_of_any_kernel_size_keeps_its_images_shape(kernel_size: int,
                                                         shape: list[int]) -> None:
    model = CNN(CNNConfig(input_shape=shape, num_classes=3, channels=[2, 3], hidden_sizes=[4],
                          kernel_size=kernel_size))
    logits, loss = model(torch.rand(2, *shape), torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and loss is not None and torch.isfinite(loss)


def test_an_even_kernel_cnn_trains_on_digits() -> None:
    """Was 'mat1 and mat2 shapes cannot be multiplied' at the first batch."""
    spec = _spec({"arch": "cnn", "channels": [4, 4], "kernel_size": 4, "pool": "none",
                  "hidden_sizes": [8]}, epochs=1)
    assert Trainer(spec, load_builtin("digits"), CPU).run(RecordingCallbacks()) == "succeeded"


def test_check_forward_refuses_a_model_that_does_not_fit_the_examples() -> None:
    info = {"classes": ["a", "b"], "shape": [1, 8, 8]}
    config = registry.config_from_spec(CNNSpec(arch="cnn", kernel_size=4), info)
    registry.check_forward("cnn", config, info)  # fits
    config.input_shape = [1, 9, 9]  # the flattened size was computed for 8x8
    with pytest.raises(ValueError, match="shape"):
        registry.check_forward("cnn", config, info)


ZOO = [MLPSpec(arch="mlp", hidden_sizes=[8], dropout=0.5),
       CNNSpec(arch="cnn", channels=[4, 8], kernel_size=2, batch_norm=True, dropout=0.1),
       CNNSpec(arch="cnn", channels=[4], kernel_size=11, pool="avg", hidden_sizes=[]),
       CNNSpec(arch="cnn", channels=[4], kernel_size=6, pool="none"),
       RecurrentSpec(arch="rnn", hidden_size=7, activation="relu"),
       RecurrentSpec(arch="gru", hidden_size=7, num_layers=2, dropout=0.1),
       RecurrentSpec(arch="lstm", hidden_size=7, embedding_dim=3)]


@pytest.mark.parametrize("spec", ZOO, ids=lambda s: s.arch)
def test_every_architecture_runs_on_the_meta_device(spec: Any) -> None:
    """check_forward lets a spec through unchecked where an op has no meta kernel: the zoo
    has none such, so that every spec is checked."""
    info = ({"vocab": list("abcde")} if spec.arch in registry.TEXT_ARCHS
            else {"classes": ["a", "b"], "shape": [1, 8, 8]})
    config = registry.config_from_spec(spec, info)
    with torch.device("meta"):
        module = registry.build(spec.arch, config)
        x = (torch.zeros(2, 3, dtype=torch.long) if spec.arch in registry.TEXT_ARCHS
             else torch.zeros(2, 1, 8, 8))
        logits, _ = module(x)
    assert logits.device.type == "meta"
    registry.check_forward(spec.arch, config, info)


# -- watched metrics: named once, by kind of model ----------------------------------------------

@pytest.mark.parametrize(("arch", "dataset", "names"), [
    ("mlp", "builtin:digits", CLASSIFIER_METRICS),
    ("lstm", "builtin:python-docs", CHARACTER_METRICS)])
def test_metric_sets_are_what_each_kind_of_model_records(arch: str, dataset: str,
                                                         names: frozenset[str]) -> None:
    model = {"arch": arch, "hidden_size": 8} if arch == "lstm" else {"arch": arch,
                                                                      "hidden_sizes": [8]}
    spec = _spec(model, dataset, epochs=1, seq_len=8, batch_size=4096)
    assert registry.metrics_of(arch) == names
    hooks = RecordingCallbacks()
    Trainer(spec, load_builtin(dataset.removeprefix("builtin:")), CPU).run(hooks)
    assert {name for name in hooks.epochs[0][1] if re.fullmatch(METRIC_NAME, name)} == names


def test_watched_metrics_names_each_field() -> None:
    spec = _spec({"arch": "mlp"}, lr_schedule={"name": "plateau", "metric": "train_bpc"},
                 early_stopping={"metric": "val_accuracy"})
    assert watched_metrics(spec.training) == {
        "training.lr_schedule.metric": "train_bpc",
        "training.early_stopping.metric": "val_accuracy"}
    assert watched_metrics(_spec({"arch": "mlp"}).training) == {}


def test_has_validation_follows_the_splits_arithmetic() -> None:
    assert has_validation("images", 1797, 0.2)
    assert not has_validation("images", 1797, 0.0)
    assert not has_validation("text", 7, 0.1)  # 0 characters held out
    assert not has_validation("text", 10, 0.1)  # 1: no input and target pair
    assert has_validation("text", 20, 0.1)
    assert len(load_builtin("hihello").val) == 0


# -- at run time: whose fault -------------------------------------------------------------------

def test_an_error_in_the_training_step_is_the_jobs_own_fault(writer: BackgroundWriter) -> None:
    """The issue's MLP with a plateau schedule on train_bpc, as a row stored before submit
    refused it would be: a KeyError out of the scheduler's step."""
    spec = _spec({"arch": "mlp", "hidden_sizes": [8]},
                 lr_schedule={"name": "plateau", "metric": "train_bpc"})
    trainer = Trainer(spec, load_builtin("digits"), CPU)
    expected = "training raised KeyError: metric 'train_bpc'"
    with pytest.raises(TrainingError, match=expected), own_fault(writer):
        trainer.run(RecordingCallbacks())


@pytest.mark.parametrize("error", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                   ValueError("bad"), IndexError("out of range"),
                                   ZeroDivisionError("division by zero")])
def test_any_exception_of_the_jobs_code_becomes_a_training_error(
        writer: BackgroundWriter, error: Exception) -> None:
    with pytest.raises(TrainingError) as raised, own_fault(writer):
        raise error
    assert str(raised.value) == f"training raised {type(error).__name__}: {error}"
    assert raised.value.__cause__ is error


def test_a_long_message_is_cut(writer: BackgroundWriter) -> None:
    with pytest.raises(TrainingError) as raised, own_fault(writer):
        raise RuntimeError("x" * 100_000)
    assert len(str(raised.value)) < 2100


@pytest.mark.parametrize("error", [LeaseLost("job"), TrainingError("diverged"),
                                   torch.OutOfMemoryError("oom")])
def test_what_the_runner_already_classifies_passes_through(
        writer: BackgroundWriter, error: Exception) -> None:
    with pytest.raises(type(error)) as raised, own_fault(writer):
        raise error
    assert raised.value is error


def test_the_writers_database_error_stays_the_infrastructures(writer: BackgroundWriter) -> None:
    """Raised in the training thread by the next submit: it is the writer's, to be retried."""
    def database_down() -> None:
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
    writer.submit(database_down)
    with pytest.raises(OperationalError) as raised:
        writer.flush()
    assert raised.value is writer.error
    with pytest.raises(OperationalError), own_fault(writer):
        writer.raise_error()
