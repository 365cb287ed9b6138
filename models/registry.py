"""Architecture names to config dataclasses and modules; specs name enums, never code."""

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from models.cnn import CNN, CNNConfig
from models.mlp import MLP, MLPConfig
from models.recurrent import CharRNN, CharRNNConfig
from models.spec import (
    CHARACTER_METRICS,
    CLASSIFIER_METRICS,
    CNNSpec,
    MLPSpec,
    ModelSpec,
    RecurrentSpec,
)

ARCHS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "cnn": (CNNConfig, CNN),
    "rnn": (CharRNNConfig, CharRNN),
    "gru": (CharRNNConfig, CharRNN),
    "lstm": (CharRNNConfig, CharRNN),
}
TEXT_ARCHS = frozenset({"rnn", "gru", "lstm"})
IMAGE_ARCHS = frozenset({"mlp", "cnn"})


def metrics_of(arch: str) -> frozenset[str]:
    """The metrics that a model of this architecture records, and so a job can watch."""
    return CHARACTER_METRICS if arch in TEXT_ARCHS else CLASSIFIER_METRICS


def config_from_spec(spec: ModelSpec, data_info: dict[str, Any]) -> Any:
    """The architecture's config from the validated spec and what the dataset fixes."""
    if isinstance(spec, MLPSpec):
        shape = data_info["shape"]
        return MLPConfig(input_dim=int(torch.Size(shape).numel()),
                         num_classes=len(data_info["classes"]), hidden_sizes=spec.hidden_sizes,
                         activation=spec.activation.value, dropout=spec.dropout)
    if isinstance(spec, CNNSpec):
        shape = list(data_info["shape"])
        if len(shape) == 2:
            shape = [1, *shape]
        return CNNConfig(input_shape=shape, num_classes=len(data_info["classes"]),
                         channels=spec.channels, kernel_size=spec.kernel_size, pool=spec.pool,
                         hidden_sizes=spec.hidden_sizes, activation=spec.activation.value,
                         dropout=spec.dropout, batch_norm=spec.batch_norm)
    assert isinstance(spec, RecurrentSpec)
    return CharRNNConfig(vocab_size=len(data_info["vocab"]), cell=spec.arch,
                         hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                         embedding_dim=spec.embedding_dim, dropout=spec.dropout,
                         activation=spec.activation)


def build(arch: str, config: Any) -> nn.Module:
    _, module_class = ARCHS[arch]
    return module_class(config)


def rebuild(arch: str, saved: dict[str, Any]) -> nn.Module:
    """A module from a checkpoint's primitives, nanoGPT-style: Config(**saved_args)."""
    config_class, module_class = ARCHS[arch]
    return module_class(config_class(**saved))


def config_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def count_parameters(arch: str, config: Any) -> int:
    """Parameters of the model the config describes, without allocating its weights."""
    with torch.device("meta"):
        module = build(arch, config)
    return sum(p.numel() for p in module.parameters())


def check_forward(arch: str, config: Any, data_info: dict[str, Any]) -> None:
    """Run the model once on a batch shaped like the dataset's examples, on the meta device:
    shapes only, no memory and no arithmetic. Raises ValueError with torch's own message
    where they do not fit, so that a spec that cannot train is refused before it is queued."""
    with torch.device("meta"):
        module = build(arch, config)
        if arch in TEXT_ARCHS:
            batch = torch.zeros(2, 2, dtype=torch.long)
        else:
            batch = torch.zeros(2, *data_info["shape"])
        try:
            module(batch)
        except NotImplementedError:
            return  # an op without a meta kernel says nothing about the shapes: let it train
        except (RuntimeError, ValueError) as exc:
            raise ValueError(str(exc)) from exc
