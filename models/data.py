"""Datasets as tensors: the built-ins, their fixed splits, and character windows."""

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

BUILTIN_DIR = Path(__file__).parent / "builtin_data"
SPLIT_SEED = 0  # splits are a property of the dataset, not of the job's seed


@dataclass
class ImageData:
    x_train: torch.Tensor  # float32 (N, C, H, W), scaled to [0, 1]
    y_train: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: list[str]
    shape: list[int]

    kind = "images"


@dataclass
class TextData:
    vocab: list[str]  # index -> character
    train: torch.Tensor  # int64 character ids
    val: torch.Tensor

    kind = "text"


@dataclass(frozen=True)
class Builtin:
    kind: str
    description: str
    validation_fraction: float


BUILTINS: dict[str, Builtin] = {
    "hihello": Builtin("text", "the seed's example: the single string 'hihello'", 0.0),
    "digits": Builtin("images", "1,797 8x8 handwritten digits (UCI, as bundled by "
                      "scikit-learn), 10 classes", 0.2),
}


@lru_cache(maxsize=4)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    raw = (BUILTIN_DIR / "digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",",
                       dtype=np.float32)
    x = (table[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    return x, table[:, -1].astype(np.int64)


def _hihello() -> str:
    return "hihello"


def builtin_info(name: str) -> dict[str, Any] | None:
    """What the API needs to know of a built-in (kind, size, vocab or classes), or None."""
    builtin = BUILTINS.get(name)
    if builtin is None:
        return None
    info: dict[str, Any] = {"name": f"builtin:{name}", "kind": builtin.kind,
                            "description": builtin.description,
                            "validation_fraction": builtin.validation_fraction}
    if name == "hihello":
        text = _hihello()
        info |= {"num_examples": len(text), "vocab": sorted(set(text))}
    elif name == "digits":
        x, y = _digits_arrays()
        info |= {"num_examples": len(y), "classes": [str(c) for c in range(10)],
                 "shape": list(x.shape[1:])}
    return info


def load_builtin(name: str, validation_fraction: float | None = None) -> ImageData | TextData:
    builtin = BUILTINS[name]
    fraction = builtin.validation_fraction if validation_fraction is None else validation_fraction
    if name == "hihello":
        return text_data(_hihello(), fraction)
    x, y = _digits_arrays()
    return image_data(x, y, [str(c) for c in range(10)], fraction)


def image_data(x: np.ndarray, y: np.ndarray, classes: list[str], fraction: float) -> ImageData:
    """A fixed, shuffled split: the same examples are held out for every job."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_val = round(len(y) * fraction)
    val, train = order[:n_val], order[n_val:]
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    return ImageData(x_train=xt[train].contiguous(), y_train=yt[train].contiguous(),
                     x_val=xt[val].contiguous(), y_val=yt[val].contiguous(),
                     classes=classes, shape=list(x.shape[1:]))


def text_data(text: str, fraction: float) -> TextData:
    """The last `fraction` of the corpus is held out, so validation text is never trained on."""
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    n_val = int(len(ids) * fraction)
    split = len(ids) - n_val
    return TextData(vocab=vocab, train=ids[:split], val=ids[split:])


def windows(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Non-overlapping windows of seq_len + 1 ids: input is [:-1], target is [1:]."""
    if len(ids) < seq_len + 1:
        return ids.new_empty((0, seq_len + 1))
    return ids.unfold(0, seq_len + 1, seq_len).contiguous()
