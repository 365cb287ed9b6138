"""Datasets as arrays: the built-ins, uploads opened from their stored maps, their fixed
splits, and how many character windows a text holds (workers/batches.py reads them)."""

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np

from models import formats, mapped
from models.formats.text import id_table, ids_of
from models.idx import parse_idx

BUILTIN_DIR = Path(__file__).parent / "builtin_data"
SPLIT_SEED = 0  # splits are a property of the dataset, not of the job's seed


@dataclass
class ImageData:
    """Examples as they are stored (uint8 pixels, scaled when a batch is read, or float32
    features), with the rows each split takes. Uploads are views of a map (`source`), so a
    worker holds the pages it reads, not the dataset; the built-ins are small arrays."""

    x: np.ndarray  # (N, C, H, W) or (N, F): uint8 pixels or float32 features
    y: np.ndarray  # (N,) unsigned class indices
    train_rows: np.ndarray  # indices into x: a fixed shuffled split
    val_rows: np.ndarray
    classes: list[str]
    shape: list[int]
    x_test: np.ndarray | None = None  # a dataset's own test split, evaluated once at the end
    y_test: np.ndarray | None = None
    source: mapped.Mapped | None = None

    kind = "images"


@dataclass
class TextData:
    """Character ids (the narrowest unsigned type), the first `split` of them for training
    and the rest held out; windows are offsets into them, never copies."""

    vocab: list[str]  # index -> character
    ids: np.ndarray
    split: int
    source: mapped.Mapped | None = None

    kind = "text"

    @property
    def train(self) -> np.ndarray:
        return self.ids[:self.split]

    @property
    def val(self) -> np.ndarray:
        return self.ids[self.split:]


@dataclass(frozen=True)
class Builtin:
    kind: str
    description: str
    validation_fraction: float


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]

BUILTINS: dict[str, Builtin] = {
    "hihello": Builtin("text", "the seed's example: the single string 'hihello'", 0.0),
    "digits": Builtin("images", "1,797 8x8 handwritten digits (UCI, as bundled by "
                      "scikit-learn), 10 classes", 0.2),
    "fashion-mnist": Builtin("images", "70,000 28x28 Zalando clothing images, 10 classes; "
                             "its own 10,000-image test split (Debian's dataset-fashion-mnist)",
                             1 / 12),
    "python-docs": Builtin("text", "English prose of Python's own documentation "
                           "(pydoc_data.topics, about 460,000 characters)", 0.1),
}


def available(name: str) -> bool:
    """Fashion-MNIST exists only where its Debian package is installed."""
    return name in BUILTINS and (name != "fashion-mnist" or FASHION_DIR.is_dir())


@lru_cache(maxsize=4)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    raw = (BUILTIN_DIR / "digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",",
                       dtype=np.float32)
    x = (table[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    return x, table[:, -1].astype(np.int64)


def _hihello() -> str:
    return "hihello"


@lru_cache(maxsize=1)
def _python_docs() -> str:
    return "\n\n".join(topics[key] for key in sorted(topics))


@lru_cache(maxsize=2)
def _fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = parse_idx(gzip.decompress((FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
                                       .read_bytes()), f"{prefix} images")
    labels = parse_idx(gzip.decompress((FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
                                       .read_bytes()), f"{prefix} labels")
    # uint8, scaled a batch at a time like an upload's pixels: a quarter of the memory.
    return images.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def builtin_info(name: str) -> dict[str, Any] | None:
    """What the API needs to know of a built-in (kind, size, vocab or classes), or None."""
    builtin = BUILTINS.get(name)
    if builtin is None or not available(name):
        return None
    info: dict[str, Any] = {"name": f"builtin:{name}", "kind": builtin.kind,
                            "description": builtin.description,
                            "validation_fraction": builtin.validation_fraction}
    if name == "hihello":
        text = _hihello()
        info |= {"num_examples": len(text), "vocab": sorted(set(text))}
    elif name == "python-docs":
        text = _python_docs()
        info |= {"num_examples": len(text), "vocab": sorted(set(text))}
    elif name == "digits":
        x, y = _digits_arrays()
        info |= {"num_examples": len(y), "classes": [str(c) for c in range(10)],
                 "shape": list(x.shape[1:])}
    elif name == "fashion-mnist":
        info |= {"num_examples": 70_000, "classes": FASHION_CLASSES, "shape": [1, 28, 28],
                 "test_examples": 10_000}
    return info


def load_builtin(name: str, validation_fraction: float | None = None) -> ImageData | TextData:
    builtin = BUILTINS[name]
    fraction = builtin.validation_fraction if validation_fraction is None else validation_fraction
    if name == "hihello":
        return text_data(_hihello(), fraction)
    if name == "python-docs":
        return text_data(_python_docs(), fraction)
    if name == "fashion-mnist":
        x, y = _fashion_arrays("train")
        data = image_data(x, y, FASHION_CLASSES, fraction)
        data.x_test, data.y_test = _fashion_arrays("test")
        return data
    x, y = _digits_arrays()
    return image_data(x, y, [str(c) for c in range(10)], fraction)


def held_out(kind: str, examples: int, fraction: float) -> int:
    """Examples (characters for text) a split holds out for validation."""
    return int(examples * fraction) if kind == "text" else round(examples * fraction)


def has_validation(kind: str, examples: int, fraction: float) -> bool:
    """Whether a job on this split records val_ metrics: the trainer evaluates text only
    from two held-out characters on (one input and its target)."""
    return held_out(kind, examples, fraction) >= (2 if kind == "text" else 1)


def split_rows(examples: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, shuffled split: the same examples are held out for every job. Returns the
    training rows and the validation rows."""
    order = np.random.default_rng(SPLIT_SEED).permutation(examples)
    if examples < 2**31:
        order = order.astype(np.int32)
    n_val = held_out("images", examples, fraction)
    return order[n_val:], order[:n_val]


def image_data(x: np.ndarray, y: np.ndarray, classes: list[str], fraction: float,
               source: mapped.Mapped | None = None) -> ImageData:
    train, val = split_rows(len(y), fraction)
    return ImageData(x=x, y=y, train_rows=train, val_rows=val, classes=classes,
                     shape=list(x.shape[1:]), source=source)


def text_data(text: str, fraction: float) -> TextData:
    """The last `fraction` of the corpus is held out, so validation text is never trained on."""
    vocab = sorted(set(text))
    return text_ids(ids_of(text, id_table(vocab)), vocab, fraction)


def text_ids(ids: np.ndarray, vocab: list[str], fraction: float,
             source: mapped.Mapped | None = None) -> TextData:
    return TextData(vocab=vocab, ids=ids, split=len(ids) - held_out("text", len(ids), fraction),
                    source=source)


def window_count(length: int, seq_len: int) -> int:
    """Non-overlapping windows of seq_len + 1 ids (one id shared with the next) in `length`."""
    return 0 if length < seq_len + 1 else (length - seq_len - 1) // seq_len + 1


# -- Uploaded datasets: stored by app/datasets in the form models/formats/stored.py defines. -------


def load_upload(fetch: Callable[[str, str], Path], dataset_id: str, kind: str,
                info: dict[str, Any],
                validation_fraction: float | None = None) -> ImageData | TextData:
    """An uploaded dataset from the artifact store, hash-checked, mapped rather than loaded
    (older stored forms are read whole), split the way its info says (or as the job asks).
    `fetch(key, sha256)` is the store's: a local path to the stored file, verified. Raises
    formats.FormatError."""
    path = fetch(formats.relative_path(dataset_id, kind, info), info["stored"]["sha256"])
    return open_stored(path, kind, info, validation_fraction)


def open_stored(path: Path, kind: str, info: dict[str, Any],
                validation_fraction: float | None = None) -> ImageData | TextData:
    """`load_upload` for a stored dataset's local file, wherever it was fetched to."""
    parsed = formats.read_stored(path, kind=kind, sha256=info["stored"]["sha256"],
                                 classes=info.get("classes"))
    fraction = info["validation_fraction"] if validation_fraction is None else validation_fraction
    if isinstance(parsed, formats.StoredText):
        return text_ids(parsed.ids, parsed.vocab, fraction, parsed.source)
    if isinstance(parsed, formats.Text):
        return text_data(parsed.text, fraction)
    source = parsed.source if isinstance(parsed, formats.StoredImages) else None
    data = image_data(parsed.x, parsed.y, parsed.classes, fraction, source)
    data.x_test, data.y_test = parsed.x_test, parsed.y_test
    return data
