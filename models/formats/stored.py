"""The stored form of a dataset: an .npz of numeric arrays for images, UTF-8 for text,
at a path built from the dataset's id, written whole or not at all and hash-checked when
read back."""

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from models.archive import FormatError
from models.example_arrays import Images, Limits, Text
from models.formats.npz import npz_images
from models.formats.text import TextFile
from models.store import ID, contained, read_verified


def relative_path(dataset_id: str, kind: str) -> str:
    """Built from the dataset's id alone: nothing a user sent ever names a path."""
    if not ID.fullmatch(dataset_id) or kind not in ("images", "text"):
        raise ValueError("dataset paths are built from ids only")
    return f"datasets/{dataset_id}.{'npz' if kind == 'images' else 'txt'}"


def dataset_path(root: Path, relative: str) -> Path:
    """The stored file under the store's root; anything that would leave it is refused."""
    return contained(root, relative, FormatError)


def encode(parsed: Images | Text | TextFile) -> bytes:
    """The stored form's bytes, in memory (`store` writes them without that copy)."""
    if isinstance(parsed, TextFile):
        return parsed.path.read_bytes()
    if isinstance(parsed, Text):
        return parsed.text.encode("utf-8")
    buffer = io.BytesIO()
    np.savez(buffer, **_arrays(parsed))  # type: ignore[arg-type]
    return buffer.getvalue()


def _arrays(parsed: Images) -> dict[str, np.ndarray]:
    arrays = {"x": parsed.x, "y": parsed.y}
    if parsed.x_test is not None and parsed.y_test is not None:
        arrays |= {"x_test": parsed.x_test, "y_test": parsed.y_test}
    return arrays


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def store(parsed: Images | Text | TextFile, path: Path) -> tuple[str, int]:
    """Write the stored form at `path` whole or not at all; returns its sha256 and size.

    Streamed text is moved into place; arrays are written straight to a file, never first
    into a second copy in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(parsed, TextFile):
        with open(parsed.path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(parsed.path, path)
        _fsync_dir(path.parent)
        return parsed.sha256, parsed.bytes
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            if isinstance(parsed, Text):
                handle.write(parsed.text.encode("utf-8"))
            else:
                np.savez(handle, **_arrays(parsed))  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        sha256, size = _sha256_of(tmp), tmp.stat().st_size
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return sha256, size


def discard(parsed: Images | Text | TextFile) -> None:
    """Remove what parsing wrote that `store` did not move into place."""
    if isinstance(parsed, TextFile):
        parsed.path.unlink(missing_ok=True)


def read_stored(path: Path, *, kind: str, sha256: str, classes: list[str] | None,
                limits: Limits | None = None) -> Images | Text:
    """A stored dataset, hash-checked and validated again, as the API first stored it."""
    data = read_verified(path, sha256, FormatError, "the stored dataset")
    # Checked when it was uploaded, under the limits of that day: only the bytes bound it now.
    limits = limits or Limits(max_examples=2**62, max_vocab=2**62, max_classes=2**62,
                              max_decompressed_bytes=len(data))
    if kind == "text":
        try:
            return Text(text=data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError("the stored dataset is not UTF-8") from None
    # scale=False: stored pixels are uint8 or float32 already; CSV features keep their range.
    return npz_images(io.BytesIO(data), "stored dataset", limits, classes, scale=False)
