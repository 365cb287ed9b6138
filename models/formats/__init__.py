"""Uploaded dataset formats: parsed into numpy arrays and checked completely, or refused.

The API parses an upload once, here, and stores what came out in one plain form (stored.py:
a memory-mappable arrays file of uint8 pixels or float32 features, or of character ids);
a worker maps that file and models/data.py and workers/batches.py read batches from it.
Nothing is unpickled, and every decompressed byte is counted (models/archive.py). One
module per format: text.py, tabular.py (csv), npz.py, idx.py, cifar.py.
"""

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from models.archive import FormatError
from models.example_arrays import Images, Limits, Text, to_float
from models.formats.cifar import cifar_images
from models.formats.idx import idx_images
from models.formats.npz import npz_images
from models.formats.stored import (
    FORM,
    StoredImages,
    StoredText,
    dataset_path,
    discard,
    read_stored,
    relative_path,
    store,
)
from models.formats.tabular import parse_csv
from models.formats.text import TextFile, id_dtype, parse_text

__all__ = ["FORM", "FORMATS", "FormatError", "Images", "Limits", "StoredImages", "StoredText",
           "Text", "TextFile", "dataset_path", "describe", "discard", "display_name", "parse",
           "read_stored", "relative_path", "store", "to_float"]

FORMATS = ("text", "npz", "idx", "cifar10-bin", "csv")
VALIDATION_FRACTION = 0.1  # images: a fixed shuffled tenth; text: the last tenth


def parse(fmt: str, parts: dict[str, tuple[Path, str]], options: dict[str, str],
          limits: Limits) -> Images | TextFile:
    """Parse one upload. `parts` maps multipart field ('file', 'labels') to (path, name).

    Text is written out as it is decoded, beside the upload's file, under a name that ends
    in `.part` like it (so that what a crash leaves is swept with it): `store` moves it into
    place, `discard` removes it."""
    path, name = parts["file"]
    if fmt == "text":
        out = path.with_name(f"{path.stem}-text.part")
        return parse_text(path, name, options.get("encoding"), limits, out)
    if fmt == "npz":
        return npz_images(path, name, limits)
    if fmt == "idx":
        return idx_images([(field, *parts[field]) for field in ("file", "labels")
                           if field in parts], limits)
    if fmt == "cifar10-bin":
        return cifar_images(path, name, limits)
    if fmt == "csv":
        return parse_csv(path, name, options.get("label_column"), options.get("shape"), limits)
    raise FormatError(f"unknown format '{fmt}'; one of {', '.join(FORMATS)}", field="format")


def describe(parsed: Images | Text | TextFile) -> dict[str, Any]:
    """What a dataset row records beyond its columns: split, and vocab or classes and shape."""
    if not isinstance(parsed, Images):
        n_val = int(parsed.num_examples * VALIDATION_FRACTION)
        return {"validation_fraction": VALIDATION_FRACTION, "encoding": parsed.encoding,
                "vocab": parsed.vocab, "ids": id_dtype(len(parsed.vocab)).name,
                "split": {"train": parsed.num_examples - n_val, "validation": n_val, "test": 0}}
    n = len(parsed.y)
    n_val = round(n * VALIDATION_FRACTION)  # as models.data.image_data rounds it
    return {"validation_fraction": VALIDATION_FRACTION, "classes": parsed.classes,
            "shape": parsed.shape,
            "pixels": "uint8, divided by 255" if parsed.x.dtype == np.uint8 else "float32",
            "split": {"train": n - n_val, "validation": n_val,
                      "test": 0 if parsed.y_test is None else len(parsed.y_test)}}


def display_name(filename: str | None) -> str:
    """A client's file name as a label: its last component, printable, at most 200 chars."""
    base = PureWindowsPath(PurePosixPath(filename or "").name).name
    return "".join(c for c in base if c.isprintable())[:200]
