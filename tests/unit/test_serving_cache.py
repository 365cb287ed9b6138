"""The model cache loads each model once, checks its hash, and stays within its bounds; the
short-lived lookups expire."""

import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from app.keys.service import TTLCache
from app.serving.cache import ModelCache, module_bytes
from models import checkpoint as ckpt
from models.checkpoint import CheckpointError
from models.recurrent import CharRNN, CharRNNConfig


def saved_model(tmp_path: Path, name: str, hidden: int = 8) -> tuple[Path, str, int]:
    torch.manual_seed(0)
    config = CharRNNConfig(vocab_size=3, hidden_size=hidden)
    module = CharRNN(config)
    meta = {"arch": "lstm", "config": asdict(config), "task": "char",
            "data": {"vocab": ["a", "b", "c"]}}
    path = tmp_path / f"{name}.safetensors"
    sha, _ = ckpt.save(path, ckpt.prefixed("model.", module.state_dict()), meta)
    return path, sha, module_bytes(module)


def test_a_model_is_loaded_once_for_many_requests(tmp_path: Path) -> None:
    path, sha, nbytes = saved_model(tmp_path, "m")
    cache = ModelCache(capacity=4)
    models = [cache.get("m", path, sha) for _ in range(50)]
    assert all(m is models[0] for m in models)
    assert (cache.loads, cache.hits) == (1, 49)
    assert cache.load_seconds > 0
    loaded = models[0]
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    assert loaded.lookup == {"a": 0, "b": 1, "c": 2} and loaded.nbytes == nbytes


def test_concurrent_first_requests_load_once(tmp_path: Path) -> None:
    path, sha, _ = saved_model(tmp_path, "m")
    cache = ModelCache(capacity=4)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("m", path, sha)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and len({id(m) for m in results}) == 1


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    path, sha, _ = saved_model(tmp_path, "m")
    path.write_bytes(path.read_bytes() + b"x")
    cache = ModelCache(capacity=4)
    with pytest.raises(CheckpointError):
        cache.get("m", path, sha)
    assert cache.loads == 0 and len(cache) == 0


def test_lru_by_count(tmp_path: Path) -> None:
    files = [saved_model(tmp_path, f"m{i}") for i in range(3)]
    cache = ModelCache(capacity=2)
    for i, (path, sha, _) in enumerate(files):
        cache.get(f"m{i}", path, sha)
    assert len(cache) == 2
    cache.get("m1", files[1][0], files[1][1])
    assert cache.loads == 3  # m1 stayed; m0 was the least recently used
    cache.get("m0", files[0][0], files[0][1])
    assert cache.loads == 4 and cache.evictions == 2


def test_lru_by_parameter_bytes(tmp_path: Path) -> None:
    small = saved_model(tmp_path, "small", hidden=4)
    big = saved_model(tmp_path, "big", hidden=64)
    cache = ModelCache(capacity=100, max_bytes=big[2] + small[2] - 1)
    cache.get("small", small[0], small[1])
    cache.get("big", big[0], big[1])
    assert len(cache) == 1 and cache.nbytes == big[2]  # both do not fit: the older went
    alone = ModelCache(capacity=100, max_bytes=1)
    alone.get("big", big[0], big[1])
    assert len(alone) == 1  # bigger than the whole budget, still served, alone


def test_ttl_cache_expires_and_is_bounded() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl=0.05, max_entries=2)
    cache.put("a", 1)
    assert cache.get("a") == 1
    time.sleep(0.06)
    assert cache.get("a") is None
    for key in "bcd":
        cache.put(key, 1)
    assert cache.get("b") is None and cache.get("d") == 1
    off: TTLCache[str, int] = TTLCache(ttl=0)
    off.put("a", 1)
    assert off.get("a") is None
