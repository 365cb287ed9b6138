"""The stored form of a dataset: one memory-mappable arrays file (models/mapped.py) at a path
built from the dataset's id, written whole or not at all and hash-checked when opened.

Images keep their pixels as uint8 (scaled to [0, 1] a batch at a time, as they are read) or
their float features as float32; labels take the narrowest unsigned integer that holds the
classes. Text is its character ids in the narrowest unsigned integer that holds the
vocabulary (uint8 for up to 256 characters), so a corpus is stored, and read, at about its
own size, and a worker maps it instead of loading it.

Both functions are path-based: `store` writes a local file, `read_stored` opens one, so that
an artifact store can keep that file wherever it keeps files. Datasets stored before this
form (an .npz for images, UTF-8 for text) are still read, whole, as they always were.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models import mapped
from models.archive import FormatError
from models.example_arrays import Images, Limits, Text
from models.formats.npz import npz_images
from models.formats.text import TextFile, encoded_ids, id_dtype, id_table, ids_of
from models.store import ID, contained, read_verified

FORM = "arrays-v1"  # info["stored"]["form"] of datasets stored as a mapped arrays file


@dataclass
class StoredText:
    """A stored corpus as character ids, a view of its map (or an array, for small ones)."""

    ids: np.ndarray
    vocab: list[str]
    source: mapped.Mapped | None = None

    kind: ClassVar[str] = "text"

    @property
    def num_examples(self) -> int:
        return len(self.ids)


@dataclass
class StoredImages:
    """Stored images as views of their map: uint8 pixels or float32 features, unscaled."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: mapped.Mapped | None = None

    kind: ClassVar[str] = "images"


def relative_path(dataset_id: str, kind: str, info: dict[str, Any] | None = None) -> str:
    """Built from the dataset's id alone: nothing a user sent ever names a path. `info`, the
    dataset row's, names the older forms' files for rows stored before this one."""
    if not ID.fullmatch(dataset_id) or kind not in ("images", "text"):
        raise ValueError("dataset paths are built from ids only")
    if info is not None and info.get("stored", {}).get("form") != FORM:
        return f"datasets/{dataset_id}.{'npz' if kind == 'images' else 'txt'}"
    return f"datasets/{dataset_id}.arrays"


def dataset_path(root: Path, relative: str) -> Path:
    """The stored file under the store's root; anything that would leave it is refused."""
    return contained(root, relative, FormatError)


def label_dtype(classes: int) -> np.dtype[Any]:
    return id_dtype(classes)  # the same rule: the narrowest unsigned integer that holds them


def _image_arrays(parsed: Images) -> dict[str, mapped.Source]:
    labels = label_dtype(len(parsed.classes))
    arrays: dict[str, mapped.Source] = {"x": parsed.x, "y": parsed.y.astype(labels)}
    if parsed.x_test is not None and parsed.y_test is not None:
        arrays |= {"x_test": parsed.x_test, "y_test": parsed.y_test.astype(labels)}
    return arrays


def store(parsed: Images | Text | TextFile, path: Path) -> tuple[str, int]:
    """Write the stored form at `path` whole or not at all; returns its sha256 and size.

    A streamed text upload is encoded from its scratch file a chunk at a time, so storing a
    corpus of any size costs a chunk of memory; the scratch file stays for `discard`."""
    if isinstance(parsed, TextFile):
        ids = mapped.Streamed(id_dtype(len(parsed.vocab)), (parsed.num_examples,),
                              encoded_ids(parsed))
        return mapped.write(path, {"ids": ids}, {"kind": "text", "vocab": parsed.vocab})
    if isinstance(parsed, Text):
        vocab = parsed.vocab
        return mapped.write(path, {"ids": ids_of(parsed.text, id_table(vocab))},
                            {"kind": "text", "vocab": vocab})
    return mapped.write(path, _image_arrays(parsed),
                        {"kind": "images", "classes": parsed.classes})


def discard(parsed: Images | Text | TextFile) -> None:
    """Remove what parsing wrote (a text upload's UTF-8 scratch file)."""
    if isinstance(parsed, TextFile):
        parsed.path.unlink(missing_ok=True)


def _checked_images(source: mapped.Mapped, what: str) -> StoredImages:
    """Cheap checks of the arrays' types and shapes: their bytes were checked by their hash,
    and their values when they were uploaded; nothing here reads the pixels."""
    a, classes = source.arrays, source.meta.get("classes") or []
    x, y = a.get("x"), a.get("y")
    if x is None or y is None or x.dtype not in (np.uint8, np.float32) or x.ndim not in (2, 4) \
            or y.ndim != 1 or len(x) != len(y) or y.dtype.kind != "u" or not classes:
        raise FormatError(f"{what} is not a stored image dataset")
    test = (a.get("x_test"), a.get("y_test"))
    if (test[0] is None) != (test[1] is None):
        raise FormatError(f"{what} holds only half of its test split")
    return StoredImages(x=x, y=y, classes=list(classes), x_test=test[0], y_test=test[1],
                        source=source)


def read_stored(path: Path, *, kind: str, sha256: str, classes: list[str] | None,
                limits: Limits | None = None) -> StoredText | StoredImages | Images | Text:
    """A stored dataset, hash-checked: mapped when it is in the arrays form, else (an older
    form) read whole and validated again, as the API first stored it."""
    what = "the stored dataset"
    try:
        is_arrays = mapped.is_mapped_file(path)
    except OSError as exc:
        raise FormatError(f"{what} is unreadable: {exc.strerror}") from None
    if is_arrays:
        source = mapped.open_verified(path, sha256, FormatError, what)
        if kind == "images":
            return _checked_images(source, what)
        ids, vocab = source.arrays.get("ids"), source.meta.get("vocab")
        if ids is None or ids.ndim != 1 or not vocab or ids.dtype != id_dtype(len(vocab)):
            raise FormatError(f"{what} is not a stored text dataset")
        return StoredText(ids=ids, vocab=list(vocab), source=source)
    data = read_verified(path, sha256, FormatError, what)
    # Checked when it was uploaded, under the limits of that day: only the bytes bound it now.
    limits = limits or Limits(max_examples=2**62, max_vocab=2**62, max_classes=2**62,
                              max_decompressed_bytes=len(data))
    if kind == "text":
        try:
            return Text(text=data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8") from None
    # scale=False: stored pixels are uint8 or float32 already; CSV features keep their range.
    return npz_images(io.BytesIO(data), "stored dataset", limits, classes, scale=False)
