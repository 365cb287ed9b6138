"""How much memory a job's activations take, from its spec and its dataset's shape alone.

The parameter count bounds the weights, not what one batch costs: a CNN of 1,024 channels
without pooling on 28x28 images keeps ~6 MB per example, so 65,536 examples are ~420 GB. The
API refuses such a job at submit rather than let a worker swap or die on it.

The estimate counts, in float32, every tensor the forward pass keeps for the backward pass
for one batch, as PyTorch keeps them: the input, each layer's kept outputs (activation,
batch norm, dropout, pooling and its indices, a recurrent layer's gates and states), and
the logits with their log-softmax for the loss. It is linear in
the batch size, so `max_batch` follows from it. It leaves out the weights, their gradients
and optimizer state (bounded by the parameter limit) and the framework's workspaces: an
order of magnitude, not an allocation plan.
"""

import math
from typing import Any

from models.spec import CNNSpec, MLPSpec, ModelSpec, RecurrentSpec

FLOAT_BYTES = 4
# Values a recurrent layer keeps per hidden unit and time step: its gates before and after
# their nonlinearities, its state and output, as PyTorch's oneDNN CPU kernels keep them
# (measured in tests/unit/test_memory_estimate.py; its native kernels keep about half).
KEPT_PER_UNIT = {"rnn": 2, "gru": 8, "lstm": 18}


def _dense(hidden: list[int], dropout: float, classes: int) -> int:
    """Values kept per example by the dense layers and the head (their input not counted):
    each activation's output (a linear layer's output is kept only as its input), a dropout
    mask and output, the logits and their log-softmax."""
    return sum(h * (1 + (2 if dropout else 0)) for h in hidden) + 2 * classes


def _mlp(spec: MLPSpec, info: dict[str, Any]) -> int:
    width = math.prod(info["shape"])
    return width + _dense(spec.hidden_sizes, spec.dropout, len(info["classes"]))


def _cnn(spec: CNNSpec, info: dict[str, Any]) -> int:
    shape = list(info["shape"])
    channels, height, width = [1, *shape] if len(shape) == 2 else shape
    values = channels * height * width  # the input
    for out in spec.channels:
        # as models/cnn.py: 'same' padding; a 2x2 pool while both sides are at least 2.
        # The activation's output, and with batch norm the convolution's and its own.
        values += out * height * width * (3 if spec.batch_norm else 1)
        if spec.pool != "none" and min(height, width) >= 2:
            height, width = height // 2, width // 2
            # the pooled plane, and for max pooling its int64 indices (two floats' worth)
            values += out * height * width * (3 if spec.pool == "max" else 1)
    return values + _dense(spec.hidden_sizes, spec.dropout, len(info["classes"]))


def _recurrent(spec: RecurrentSpec, info: dict[str, Any], seq_len: int) -> int:
    vocab = len(info["vocab"])
    per_step = spec.embedding_dim or vocab  # the one-hot or embedded input
    per_step += spec.num_layers * spec.hidden_size * KEPT_PER_UNIT[spec.arch]
    if spec.dropout and spec.num_layers > 1:
        per_step += (spec.num_layers - 1) * spec.hidden_size  # masks between layers
    per_step += 2 * vocab  # logits, log-softmax
    return seq_len * per_step


def per_example_bytes(model: ModelSpec, info: dict[str, Any], seq_len: int) -> int:
    """Activation bytes of one example (one window of `seq_len` characters for text)."""
    if isinstance(model, MLPSpec):
        values = _mlp(model, info)
    elif isinstance(model, CNNSpec):
        values = _cnn(model, info)
    else:
        values = _recurrent(model, info, seq_len)
    return values * FLOAT_BYTES


def activation_bytes(model: ModelSpec, info: dict[str, Any], *, batch_size: int,
                     seq_len: int) -> int:
    """Estimated activation bytes of one training batch; `info` is the dataset's (shape and
    classes for images, vocab for text)."""
    return batch_size * per_example_bytes(model, info, seq_len)


def max_batch(model: ModelSpec, info: dict[str, Any], *, seq_len: int, limit: int) -> int:
    """The largest batch whose estimate stays within `limit` (0 if not even one example)."""
    return limit // per_example_bytes(model, info, seq_len)


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
