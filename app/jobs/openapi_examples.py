"""Job specs shown in the OpenAPI document (/docs): the seed's jobs and reference runs of
bench/accuracy.py. tests/unit/test_openapi_examples.py validates each one."""

from typing import Any

JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    "seed-lstm": {
        "summary": "The seed's hihello LSTM",
        "description": "Input `hihell`, target `ihello`: hidden size 5, Adam lr 0.1. Seconds.",
        "value": {
            "name": "seed-lstm", "dataset": "builtin:hihello",
            "model": {"arch": "lstm", "hidden_size": 5, "num_layers": 1},
            "optimizer": {"name": "adam", "lr": 0.1},
            "training": {"epochs": 2000, "batch_size": 1, "seq_len": 6, "seed": 0}},
    },
    "seed-mlp": {
        "summary": "The seed's MLP on digits",
        "description": "1000-1000 ReLU, Adadelta lr 0.1 rho 0.95 eps 1e-5, batch 100.",
        "value": {
            "name": "seed-mlp", "dataset": "builtin:digits",
            "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
            "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
            "training": {"epochs": 30, "batch_size": 100, "seed": 0}},
    },
    "seed-mlp-2procs": {
        "summary": "The seed's MLP on 2 processes",
        "description": "The seed MLP data-parallel on 2 processes of one worker: each trains on "
                       "half of every batch of 100; the weights match the 1-process run.",
        "value": {
            "name": "seed-mlp-2procs", "dataset": "builtin:digits",
            "model": {"arch": "mlp", "hidden_sizes": [1000, 1000], "activation": "relu"},
            "optimizer": {"name": "adadelta", "lr": 0.1, "rho": 0.95, "eps": 1e-5},
            "training": {"epochs": 30, "batch_size": 100, "seed": 0},
            "resources": {"nodes": 1, "procs_per_node": 2}},
    },
    "fashion-cnn": {
        "summary": "A small CNN on Fashion-MNIST",
        "description": "Where Debian's dataset-fashion-mnist is installed: ~92% test accuracy.",
        "value": {
            "name": "fashion-cnn", "dataset": "builtin:fashion-mnist",
            "model": {"arch": "cnn", "channels": [32, 64], "kernel_size": 3,
                      "hidden_sizes": [128], "dropout": 0.3, "batch_norm": True},
            "optimizer": {"name": "adam", "lr": 0.001},
            "training": {"epochs": 8, "batch_size": 128, "lr_schedule": {"name": "cosine"}}},
    },
    "char-lstm": {
        "summary": "A 2-layer character LSTM on English text",
        "description": "Windows of 100 characters of Python's documentation, gradient "
                       "clipping, a cosine schedule and early stopping on validation loss.",
        "value": {
            "name": "python-docs-lstm", "dataset": "builtin:python-docs",
            "model": {"arch": "lstm", "hidden_size": 256, "num_layers": 2,
                      "embedding_dim": 64, "dropout": 0.2},
            "optimizer": {"name": "adam", "lr": 0.002},
            "training": {"epochs": 32, "batch_size": 64, "seq_len": 100, "grad_clip": 5.0,
                         "lr_schedule": {"name": "cosine"},
                         "early_stopping": {"metric": "val_loss", "patience": 4}}},
    },
}
