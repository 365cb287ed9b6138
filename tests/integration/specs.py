"""Job specs the tests submit: the seed's own, and small fast ones."""

from typing import Any

SEED_LSTM: dict[str, Any] = {
    "name": "seed-lstm",
    "dataset": "builtin:hihello",
    "model": {"arch": "lstm", "hidden_size": 5, "num_layers": 1},
    "optimizer": {"name": "adam", "lr": 0.1},
    "training": {"epochs": 2000, "batch_size": 1, "seq_len": 6, "seed": 0},
    "device": "auto",
}

SEED_MLP: dict[str, Any] = {
    "name": "seed-mlp",
    "dataset": "builtin:digits",
    "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
    "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
    "training": {"epochs": 30, "batch_size": 100, "seed": 0},
}


def small_mlp(epochs: int = 2, **training: Any) -> dict[str, Any]:
    return {"dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [32]},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "training": {"epochs": epochs, "batch_size": 64, **training}}


def long_lstm(epochs: int = 100_000) -> dict[str, Any]:
    """Runs until cancelled: one tiny step per epoch, a checkpoint every epoch."""
    return {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": epochs, "batch_size": 1, "seq_len": 6,
                         "checkpoint_every": 1}}
