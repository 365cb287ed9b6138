"""The activation estimate at submit (models/memory.py): exact on small specs, the size of
what autograd really keeps on real ones, linear in the batch, and far under the defaults
for every published example."""

from typing import Any

import pytest
import torch

from app.jobs.openapi_examples import JOB_EXAMPLES
from core.config import Settings
from models import memory, registry
from models.data import builtin_info
from models.spec import JobSpec

IMAGES = {"kind": "images", "shape": [1, 4, 4], "classes": ["a", "b"]}
TEXT = {"kind": "text", "vocab": ["a", "b", "c"]}


def _model(**fields: Any) -> Any:
    dataset = "builtin:hihello" if fields["arch"] in ("rnn", "gru", "lstm") else "builtin:digits"
    return JobSpec.model_validate({"dataset": dataset, "model": fields}).model


def test_small_specs_count_every_kept_tensor() -> None:
    # input 16; activation 2x4x4 (32); max-pooled 2x2x2 and its indices (24); dense 3;
    # logits and log-softmax 2 x2
    cnn = _model(arch="cnn", channels=[2], hidden_sizes=[3])
    assert memory.per_example_bytes(cnn, IMAGES, seq_len=1) == (16 + 32 + 24 + 3 + 4) * 4
    # batch norm keeps two planes more; no pooling keeps nothing more
    cnn = _model(arch="cnn", channels=[2], hidden_sizes=[], pool="none", batch_norm=True)
    assert memory.per_example_bytes(cnn, IMAGES, seq_len=1) == (16 + 96 + 4) * 4
    # input 16; hidden 10 with dropout: activation, dropout output and mask; head 2 x2
    mlp = _model(arch="mlp", hidden_sizes=[10], dropout=0.5)
    assert memory.per_example_bytes(mlp, IMAGES, seq_len=1) == (16 + 30 + 4) * 4
    # per step: one-hot 3; lstm 2 x 18 kept per unit; logits and log-softmax 3 x2
    lstm = _model(arch="lstm", hidden_size=2)
    assert memory.per_example_bytes(lstm, TEXT, seq_len=5) == 5 * (3 + 36 + 6) * 4
    assert memory.activation_bytes(lstm, TEXT, batch_size=7, seq_len=5) == 7 * 5 * 45 * 4
    assert memory.max_batch(lstm, TEXT, seq_len=5, limit=7 * 5 * 45 * 4 + 1) == 7


def test_the_issue_specs_are_far_past_the_defaults() -> None:
    fashion = builtin_info("fashion-mnist")
    cnn = _model(arch="cnn", channels=[1024], kernel_size=1, pool="none")
    assert memory.activation_bytes(cnn, fashion, batch_size=65_536, seq_len=64) > 100 << 30
    lstm = _model(arch="lstm", hidden_size=3000)
    docs = builtin_info("python-docs")
    assert memory.activation_bytes(lstm, docs, batch_size=65_536, seq_len=4096) > 1 << 40


def _saved_bytes(module: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """What autograd really keeps for the backward pass, each storage counted once, the
    weights (saved by reference, not activations) left out."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    # oneDNN's recurrent kernels keep about twice what PyTorch's own do; the estimate
    # follows the heavier, whatever an earlier test left the flag at.
    with torch.backends.mkldnn.flags(enabled=True), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = module(inputs, targets)
    assert loss is not None
    return sum(seen.values())


@pytest.mark.parametrize("fields", [
    {"arch": "mlp", "hidden_sizes": [256, 128], "dropout": 0.2},
    {"arch": "cnn", "channels": [16, 32], "hidden_sizes": [64], "batch_norm": True},
    {"arch": "cnn", "channels": [8], "pool": "none", "hidden_sizes": [32]},
    {"arch": "gru", "hidden_size": 64, "num_layers": 2},
    {"arch": "lstm", "hidden_size": 64, "embedding_dim": 16},
    {"arch": "lstm", "hidden_size": 128, "num_layers": 2, "dropout": 0.2},
    {"arch": "rnn", "hidden_size": 256},
], ids=lambda f: "-".join(str(v) for v in f.values()))
def test_the_estimate_is_the_size_of_what_autograd_keeps(fields: dict[str, Any]) -> None:
    model = _model(**fields)
    text = fields["arch"] in ("rnn", "gru", "lstm")
    info = builtin_info("python-docs" if text else "fashion-mnist")
    assert info is not None
    batch, seq_len = 16, 32
    module = registry.build(fields["arch"], registry.config_from_spec(model, info))
    if text:
        inputs = torch.randint(0, len(info["vocab"]), (batch, seq_len))
        targets = torch.randint(0, len(info["vocab"]), (batch, seq_len))
    else:
        inputs, targets = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    actual = _saved_bytes(module, inputs, targets)
    estimate = memory.activation_bytes(model, info, batch_size=batch, seq_len=seq_len)
    assert 0.7 <= estimate / actual <= 1.5, (estimate, actual)


@pytest.mark.parametrize("name", sorted(JOB_EXAMPLES))
def test_every_published_example_fits_the_cpu_default(name: str) -> None:
    spec = JobSpec.model_validate(JOB_EXAMPLES[name]["value"])
    info = builtin_info(spec.dataset.removeprefix("builtin:"))
    assert info is not None
    needed = memory.activation_bytes(spec.model, info, batch_size=spec.training.batch_size,
                                     seq_len=spec.training.seq_len)
    assert needed < Settings().max_activation_bytes_cpu // 16, memory.human(needed)
