"""The job spec: bounds, enums, forbidden extras, and the defaults it stores."""

import copy

import pytest
from pydantic import ValidationError

from models.spec import AdamSpec, JobSpec, SGDSpec

BASE = {"dataset": "builtin:digits", "model": {"arch": "mlp"}}


def spec(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def _locs(exc: ValidationError) -> set[str]:
    return {str(err["loc"][0]) for err in exc.errors()}


def test_minimal_spec_is_valid() -> None:
    job = JobSpec.model_validate(BASE)
    assert job.model.arch == "mlp"


@pytest.mark.parametrize("arch", ["transformer", "MLP", "__import__('os')", "models.mlp.MLP", ""])
def test_unknown_arch_is_rejected_at_model(arch: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec(model={"arch": arch}))
    assert _locs(info.value) == {"model"}
    assert "model" in str(info.value)


@pytest.mark.parametrize("lr", [-0.1, 0, 101, float("nan")])
def test_bad_lr_is_rejected(lr: float) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec(optimizer={"name": "adam", "lr": lr}))
    assert _locs(info.value) == {"optimizer"}


@pytest.mark.parametrize("name", ["adadelta", "adagrad", "adam", "adamw", "sgd", "rmsprop"])
def test_negative_lr_is_rejected_for_every_optimizer(name: str) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(optimizer={"name": name, "lr": -1e-3}))


def test_unknown_optimizer_is_rejected() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(optimizer={"name": "lbfgs"}))


@pytest.mark.parametrize("place", ["top", "model", "optimizer", "training"])
def test_extra_unknown_field_is_rejected(place: str) -> None:
    data = spec(optimizer={"name": "adam"}, training={})
    target = data if place == "top" else data[place]
    target["hiden_sizes"] = [10]
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(data)
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


def test_missing_model_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"dataset": "builtin:digits"})
    assert _locs(info.value) == {"model"}


def test_missing_dataset_is_rejected() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"model": {"arch": "mlp"}})


def test_relu_activation_is_for_rnn_only() -> None:
    rnn = JobSpec.model_validate(spec(dataset="builtin:hihello",
                                      model={"arch": "rnn", "activation": "relu"}))
    assert rnn.model.activation == "relu"
    for arch in ("lstm", "gru"):
        with pytest.raises(ValidationError):
            JobSpec.model_validate(spec(model={"arch": arch, "activation": "relu"}))
        assert JobSpec.model_validate(spec(model={"arch": arch})).model.activation == "tanh"


def test_mlp_activation_is_an_enum() -> None:
    assert JobSpec.model_validate(spec(model={"arch": "mlp", "activation": "gelu"}))
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(model={"arch": "mlp", "activation": "os.system"}))


def test_sgd_nesterov_needs_momentum() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(optimizer={"name": "sgd", "nesterov": True}))
    with pytest.raises(ValidationError):
        SGDSpec(name="sgd", nesterov=True, momentum=0.0)
    ok = JobSpec.model_validate(spec(optimizer={"name": "sgd", "nesterov": True,
                                                "momentum": 0.9}))
    assert ok.optimizer.nesterov is True


@pytest.mark.parametrize("ref", ["builtin:digits", "builtin:hihello", "builtin:my-set-2",
                                 "0123456789abcdef0123456789ab"])
def test_dataset_refs_accepted(ref: str) -> None:
    assert JobSpec.model_validate(spec(dataset=ref)).dataset == ref


@pytest.mark.parametrize("ref", [
    "../etc/passwd", "builtin:../x", "__import__('os')", "/etc/passwd", "builtin:", "builtin:-x",
    "builtin:Digits", "digits", "0123456789ABCDEF0123456789AB", "0123456789abcdef0123456789a",
    "0123456789abcdef0123456789abc", "builtin:digits/../../x", "file:///etc/passwd",
    "builtin:" + "a" * 42, "",
])
def test_dataset_refs_rejected(ref: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec(dataset=ref))
    assert _locs(info.value) == {"dataset"}


@pytest.mark.parametrize("ref", ["builtin:digits\n", "0123456789abcdef0123456789ab\n"])
def test_dataset_ref_with_trailing_newline_rejected(ref: str) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(dataset=ref))


def test_defaults_are_filled_in() -> None:
    job = JobSpec.model_validate(BASE)
    assert job.name == "mlp-digits"
    assert job.model.hidden_sizes == [1000, 1000]  # the seed's network
    assert isinstance(job.optimizer, AdamSpec)
    assert (job.optimizer.name, job.optimizer.lr, job.optimizer.weight_decay) == (
        "adam", 0.001, 0.0)
    assert job.training.epochs == 10
    assert job.training.checkpoint_every is None  # by time; see test_trainer
    assert job.device == "auto"
    lstm = JobSpec.model_validate({"dataset": "0123456789abcdef0123456789ab",
                                   "model": {"arch": "lstm"}})
    assert lstm.name == "lstm-0123456789abcdef0123456789ab"


def test_explicit_name_is_kept() -> None:
    assert JobSpec.model_validate(spec(name="mine")).name == "mine"


def test_adam_and_adamw_weight_decay_defaults() -> None:
    adamw = JobSpec.model_validate(spec(optimizer={"name": "adamw"}))
    assert adamw.optimizer.weight_decay == 0.01
    adam = JobSpec.model_validate(spec(optimizer={"name": "adam"}))
    assert adam.optimizer.weight_decay == 0.0
    explicit = JobSpec.model_validate(spec(optimizer={"name": "adamw", "weight_decay": 0.0}))
    assert explicit.optimizer.weight_decay == 0.0


def test_stored_spec_reads_back_equal() -> None:
    job = JobSpec.model_validate(spec(optimizer={"name": "adamw"}, training={"l2": 0.001}))
    stored = job.model_dump(mode="json")
    assert stored["name"] == "mlp-digits"
    assert stored["optimizer"]["weight_decay"] == 0.01
    assert JobSpec.model_validate(stored) == job


@pytest.mark.parametrize("changes", [
    {"model": {"arch": "mlp", "hidden_sizes": [10**9]}},
    {"model": {"arch": "mlp", "hidden_sizes": [8] * 17}},
    {"model": {"arch": "mlp", "hidden_sizes": [0]}},
    {"model": {"arch": "cnn", "channels": [10**6]}},
    {"model": {"arch": "cnn", "channels": []}},
    {"model": {"arch": "lstm", "hidden_size": 10**9}},
    {"model": {"arch": "lstm", "num_layers": 1000}},
    {"training": {"epochs": 10**9}},
    {"training": {"epochs": 0}},
    {"training": {"batch_size": 10**9}},
    {"training": {"seq_len": 10**9}},
    {"training": {"l2": -1}},
    {"training": {"validation_fraction": 0.9}},
    {"model": {"arch": "mlp", "dropout": 1.0}},
])
def test_out_of_bounds_sizes_are_rejected(changes: dict) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(**changes))


def test_device_is_an_enum() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(spec(device="tpu"))


def test_resources_default_to_one_process() -> None:
    job = JobSpec.model_validate(BASE)
    assert (job.resources.nodes, job.resources.procs_per_node) == (1, 1)
    assert job.resources.world_size == 1
    assert JobSpec.model_validate(spec(resources={"nodes": 2, "procs_per_node": 4})
                                  ).resources.world_size == 8


@pytest.mark.parametrize("resources", [
    {"nodes": 0}, {"procs_per_node": 0}, {"nodes": 17}, {"procs_per_node": 17},
    {"nodes": "two"}, {"nodes": 1.5}, {"gpus": 2}])
def test_bad_resources_are_rejected_at_resources(resources: dict) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(spec(resources=resources))
    assert _locs(info.value) == {"resources"}
