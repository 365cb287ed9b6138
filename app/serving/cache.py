"""Loaded models, kept in the API process: each is read, hash-checked and built once."""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import checkpoint as ckpt
from models import registry
from models.checkpoint import strip_prefix


@dataclass
class LoadedModel:
    model_id: str
    module: nn.Module
    task: str
    info: dict[str, Any]
    lookup: dict[str, int] = field(default_factory=dict)

    @property
    def vocab(self) -> list[str]:
        return self.info["vocab"]


def load_model(model_id: str, path: Path, sha256: str) -> LoadedModel:
    tensors, meta = ckpt.load(path, sha256)
    module = registry.rebuild(meta["arch"], meta["config"])
    module.load_state_dict(strip_prefix("model.", tensors))
    module.eval()
    module.requires_grad_(False)
    loaded = LoadedModel(model_id=model_id, module=module, task=meta["task"], info=meta["data"])
    if loaded.task == "char":
        loaded.lookup = {c: i for i, c in enumerate(loaded.vocab)}
    return loaded


class ModelCache:
    """An LRU of loaded models. A model is loaded by one thread while others wait for it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        self.load_seconds = 0.0

    def get(self, model_id: str, path: Path, sha256: str) -> LoadedModel:
        key = (model_id, sha256)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return loaded
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                loaded = self._models.get(key)
                if loaded is not None:
                    self.hits += 1
                    return loaded
            started = time.perf_counter()
            with torch.inference_mode():
                loaded = load_model(model_id, path, sha256)
            with self._lock:
                self.loads += 1
                self.load_seconds += time.perf_counter() - started
                self._models[key] = loaded
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
            return loaded
