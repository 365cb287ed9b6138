"""Checked example arrays: what every dataset format parses into, and the checks they share.

Images are kept as uint8 where they came as bytes and scaled to [0, 1] as float32 only when
loaded (`to_float`). Floats (npz features or pixels, CSV features) are used as given, in any
range: standardized features (mean 0, std 1) are the norm for tabular data. Only NaN and
infinities are refused, since no model can train on them.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from models.archive import FormatError


@dataclass(frozen=True)
class Limits:
    max_examples: int = 20_000_000  # examples of an image dataset
    max_chars: int = 1 << 34  # characters of a text dataset (stored and read mapped)
    max_vocab: int = 10_000
    max_classes: int = 1_000
    max_decompressed_bytes: int = 1 << 30


@dataclass
class Images:
    x: np.ndarray  # (N, *shape): uint8 pixels, or float32 features used as they are
    y: np.ndarray  # int64 class indices
    classes: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    kind: ClassVar[str] = "images"

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.x.shape[1:]]

    @property
    def num_examples(self) -> int:
        return len(self.y) + (len(self.y_test) if self.y_test is not None else 0)


@dataclass
class Text:
    text: str
    encoding: str = "utf-8"

    kind: ClassVar[str] = "text"

    @property
    def vocab(self) -> list[str]:
        return sorted(set(self.text))

    @property
    def num_examples(self) -> int:
        return len(self.text)


# -- shared checks ------------------------------------------------------------------------

def check_pixels(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise FormatError(f"{what} holds integers outside 0..255; send uint8 pixels or "
                              "float features")
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():  # also a float64 beyond float32's range, now infinite
            raise FormatError(f"{what} holds NaN or infinite values (as float32)")
        return x  # any finite range: features are the model's input as they are
    raise FormatError(f"{what} has dtype {x.dtype}; send uint8 pixels or float features")


def check_examples(x: np.ndarray, what: str, limits: Limits) -> np.ndarray:
    """(N, F), (N, H, W) or (N, C, H, W); a rank-3 array gets its one channel made explicit."""
    if x.ndim not in (2, 3, 4):
        raise FormatError(f"{what} has shape {x.shape}; expected (N, features), (N, H, W) or "
                          "(N, C, H, W)")
    if x.shape[0] == 0 or x[0].size == 0:
        raise FormatError(f"{what} holds no examples")
    if x.shape[0] > limits.max_examples:
        raise FormatError(f"{what} has {x.shape[0]:,} examples; the limit is "
                          f"{limits.max_examples:,}")
    return x.reshape(x.shape[0], 1, *x.shape[1:]) if x.ndim == 3 else x


def check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise FormatError(f"{what} has shape {y.shape}; expected one label per example")
    if y.dtype.kind not in "iu":
        raise FormatError(f"{what} has dtype {y.dtype}; labels are integer class indices")
    if len(y) != n:
        raise FormatError(f"{what} has {len(y):,} labels for {n:,} examples")
    return y.astype(np.int64)


def class_names(ys: list[np.ndarray], classes: list[str] | None, what: str,
                 limits: Limits) -> list[str]:
    """The given names, with every label checked against them; else '0'..'max label'."""
    lo = min(int(y.min()) for y in ys)
    hi = max(int(y.max()) for y in ys)
    if classes is not None:
        if lo < 0 or hi >= len(classes):
            bad = lo if lo < 0 else hi
            raise FormatError(f"{what}: label {bad} is out of range; there are "
                              f"{len(classes)} classes (0..{len(classes) - 1})")
        return classes
    if lo < 0:
        raise FormatError(f"{what}: label {lo} is out of range; labels count from 0")
    if hi >= limits.max_classes:
        raise FormatError(f"{what}: label {hi} is out of range; at most "
                          f"{limits.max_classes:,} classes are allowed")
    return [str(c) for c in range(hi + 1)]


def checked_names(names: list[str], what: str, limits: Limits) -> list[str]:
    names = [n.strip() for n in names]
    if not names or len(names) > limits.max_classes:
        raise FormatError(f"{what}: {len(names)} class names; 1 to {limits.max_classes:,} "
                          "are allowed")
    if any(not n or len(n) > 200 for n in names) or len(set(names)) != len(names):
        raise FormatError(f"{what}: class names must be distinct, non-empty and at most 200 "
                          "characters")
    return names


def checked_images(x: np.ndarray, y: np.ndarray, classes: list[str] | None, what: str,
                   limits: Limits, test: tuple[np.ndarray, np.ndarray] | None = None,
                   scale: bool = True) -> Images:
    """Examples, pixels (when `scale`: CSV features are left as they are), labels and class
    names checked together; `test` is the upload's own test set, if it has one."""
    x = check_examples(x, f"{what}: x", limits)
    x = check_pixels(x, f"{what}: x") if scale else x
    y = check_labels(y, len(x), f"{what}: y")
    x_test = y_test = None
    if test is not None:
        x_test = check_examples(test[0], f"{what}: x_test", limits)
        x_test = check_pixels(x_test, f"{what}: x_test") if scale else x_test
        if x_test.shape[1:] != x.shape[1:]:
            raise FormatError(f"{what}: test examples have shape {list(x_test.shape[1:])}, "
                              f"training examples {list(x.shape[1:])}")
        y_test = check_labels(test[1], len(x_test), f"{what}: y_test")
    names = class_names([y] if y_test is None else [y, y_test], classes, what, limits)
    result = Images(x=x, y=y, classes=names, x_test=x_test, y_test=y_test)
    if result.num_examples > limits.max_examples:
        raise FormatError(f"{what} has {result.num_examples:,} examples; the limit is "
                          f"{limits.max_examples:,}")
    return result


def to_float(x: np.ndarray) -> np.ndarray:
    """What the models see: uint8 pixels divided by 255, floats as they are."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
