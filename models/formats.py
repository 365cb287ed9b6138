"""Uploaded dataset formats: parsed into numpy arrays and checked completely, or refused.

The API parses an upload once, here, and stores what came out in one plain form (an .npz of
numeric arrays for images, UTF-8 for text); the worker reads that form back through the same
checks (models/examples.py), and models/data.py turns it into tensors. Nothing is unpickled,
and every decompressed byte is counted (models/archive.py).
"""

import hashlib
import io
import os
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from models.archive import Blob, Budget, FormatError, unpack
from models.examples import Images, Limits, Text, checked_images, checked_names, to_float
from models.idx import IdxError, parse_idx
from models.store import ID, under_root
from models.streamed import TextFile, parse_csv, parse_text

__all__ = ["FORMATS", "FormatError", "Images", "Limits", "Text", "TextFile", "describe", "discard",
           "encode", "parse", "read_stored", "relative_path", "resolve", "store", "to_float"]

FORMATS = ("text", "npz", "idx", "cifar10-bin", "csv")
VALIDATION_FRACTION = 0.1  # images: a fixed shuffled tenth; text: the last tenth
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue


# -- npz --------------------------------------------------------------------------------

def _npy(archive: zipfile.ZipFile, key: str, what: str, budget: Budget) -> np.ndarray:
    member = archive.getinfo(f"{key}.npy")
    # zipfile stops every member at its declared size, so these sizes bound what is read.
    budget.charge(member.file_size, what)
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise FormatError(f"{what}: {key} uses .npy version {version}; use 1.0 or 2.0")
    if dtype.hasobject:
        raise FormatError(f"{what}: {key} is an object array, which only pickle could load; "
                          "send plain numeric arrays")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > member.file_size:
        raise FormatError(f"{what}: {key} is truncated (its header says {shape} {dtype})")
    with archive.open(member) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def _npz_arrays(source: Path | io.BytesIO, what: str, limits: Limits) -> dict[str, np.ndarray]:
    budget = Budget(limits.max_decompressed_bytes)
    try:
        with zipfile.ZipFile(source) as archive:
            found = {n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")}
            for key in ("x", "y"):
                if key not in found:
                    raise FormatError(f"{what} has no array named '{key}' (it has: "
                                      f"{', '.join(sorted(found)) or 'none'})")
            if ("x_test" in found) != ("y_test" in found):
                raise FormatError(f"{what}: x_test and y_test come together or not at all")
            keys = [k for k in ("x", "y", "classes", "x_test", "y_test") if k in found]
            return {key: _npy(archive, key, what, budget) for key in keys}
    except FormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError,
            EOFError, NotImplementedError) as exc:
        raise FormatError(f"{what} is not a readable .npz archive ({exc})") from None


def _npz(source: Path | io.BytesIO, what: str, limits: Limits,
         classes: list[str] | None = None, scale: bool = True) -> Images:
    arrays = _npz_arrays(source, what, limits)
    if "classes" in arrays:
        names = arrays["classes"]
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise FormatError(f"{what}: classes must be a 1-D array of strings")
        classes = checked_names([n.decode(errors="replace") if isinstance(n, bytes) else str(n)
                                 for n in names.tolist()], what, limits)
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return checked_images(arrays["x"], arrays["y"], classes, what, limits, test, scale)


# -- idx --------------------------------------------------------------------------------

def _is_test(name: str) -> bool:
    base = PurePosixPath(name).name.lower()
    return "t10k" in base or "test" in base


def _idx(parts: list[tuple[str, Path, str]], limits: Limits) -> Images:
    budget = Budget(limits.max_decompressed_bytes)
    found: list[tuple[str, str, np.ndarray]] = []  # (field, name, array)
    for field, path, name in parts:
        blobs = unpack(path, name, budget)
        for blob in blobs:
            base = PurePosixPath(blob.name).name
            # A tar may carry a README or editor files beside the IDX ones: skip those.
            if blob.in_tar and (base.startswith(".") or blob.data[:2] != b"\0\0"):
                continue
            try:
                found.append((field, blob.name, parse_idx(blob.data, blob.name)))
            except IdxError as exc:
                raise FormatError(str(exc), field=field) from None
    images = [f for f in found if f[2].ndim == 3]
    labels = [f for f in found if f[2].ndim == 1]
    if other := [f for f in found if f[2].ndim not in (1, 3)]:
        raise FormatError(f"{other[0][1]} has rank {other[0][2].ndim}; expected images "
                          "(N, rows, columns) or labels (N)", field=other[0][0])
    if not (len(images) == len(labels) and len(images) in (1, 2)):
        raise FormatError(f"found {len(images)} IDX image file(s) and {len(labels)} label "
                          "file(s); send one of each (and optionally a t10k/test pair)")
    if len(images) == 2:
        train = [f for f in images + labels if not _is_test(f[1])]
        test = [f for f in images + labels if _is_test(f[1])]
        if len(train) != 2 or len(test) != 2:
            raise FormatError("two IDX pairs, but not one named t10k/test and one not")
        pairs = [sorted(train, key=lambda f: f[2].ndim, reverse=True),
                 sorted(test, key=lambda f: f[2].ndim, reverse=True)]
        if any(pair[0][2].ndim != 3 or pair[1][2].ndim != 1 for pair in pairs):
            raise FormatError("two IDX pairs, but the t10k/test files are not one images "
                              "and one labels file")
    else:
        pairs = [[images[0], labels[0]]]
    for (field, name, x), (lfield, lname, y) in pairs:
        if x.dtype != np.uint8:
            raise FormatError(f"{name} holds {x.dtype}; IDX images must be unsigned bytes",
                              field=field)
        if y.dtype.kind not in "iu":
            raise FormatError(f"{lname} holds {y.dtype}; labels must be integers", field=lfield)
        if len(x) != len(y):
            raise FormatError(f"{name} has {len(x):,} images but {lname} has {len(y):,} "
                              "labels", field=lfield)
    (_, name, x), (_, _, y) = pairs[0]
    test_xy = (pairs[1][0][2], pairs[1][1][2]) if len(pairs) == 2 else None
    return checked_images(x, y, None, name, limits, test_xy)


# -- cifar10-bin ------------------------------------------------------------------------

def _cifar_records(blob: Blob) -> tuple[np.ndarray, np.ndarray]:
    size = len(blob.data)
    if size == 0 or size % CIFAR_RECORD:
        raise FormatError(f"{blob.name}: {size:,} bytes is not a whole number of "
                          f"{CIFAR_RECORD}-byte records (1 label byte + 3,072 pixel bytes); "
                          f"the last record is {size % CIFAR_RECORD or size:,} bytes long")
    records = np.frombuffer(blob.data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _cifar(path: Path, name: str, limits: Limits) -> Images:
    blobs = unpack(path, name, Budget(limits.max_decompressed_bytes))
    classes = CIFAR10_CLASSES
    train: list[Blob] = []
    test: list[Blob] = []
    for blob in blobs:
        base = PurePosixPath(blob.name).name
        if not blob.in_tar:
            train.append(blob)
        elif base == "batches.meta.txt":
            lines = blob.data.decode("utf-8", errors="replace").splitlines()
            classes = checked_names([c for c in lines if c.strip()], base, limits)
        elif base.endswith(".bin"):
            (test if base.startswith("test") else train).append(blob)
    if not train:
        raise FormatError(f"{name} holds no data_batch_*.bin files")
    x, y = (np.concatenate(a) for a in zip(*(_cifar_records(b) for b in train), strict=True))
    test_xy = None
    if test:
        x_test, y_test = (np.concatenate(a) for a in zip(*(_cifar_records(b) for b in test),
                                                         strict=True))
        test_xy = (x_test, y_test)
    return checked_images(x, y, classes, name, limits, test_xy)


# -- the one entry point ----------------------------------------------------------------

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
        return _npz(path, name, limits)
    if fmt == "idx":
        return _idx([(field, *parts[field]) for field in ("file", "labels") if field in parts],
                    limits)
    if fmt == "cifar10-bin":
        return _cifar(path, name, limits)
    if fmt == "csv":
        return parse_csv(path, name, options.get("label_column"), options.get("shape"), limits)
    raise FormatError(f"unknown format '{fmt}'; one of {', '.join(FORMATS)}", field="format")


def describe(parsed: Images | Text | TextFile) -> dict[str, Any]:
    """What a dataset row records beyond its columns: split, and vocab or classes and shape."""
    if not isinstance(parsed, Images):
        n_val = int(parsed.num_examples * VALIDATION_FRACTION)
        return {"validation_fraction": VALIDATION_FRACTION, "encoding": parsed.encoding,
                "vocab": parsed.vocab,
                "split": {"train": parsed.num_examples - n_val, "validation": n_val, "test": 0}}
    n = len(parsed.y)
    n_val = round(n * VALIDATION_FRACTION)  # as models.data.image_data rounds it
    return {"validation_fraction": VALIDATION_FRACTION, "classes": parsed.classes,
            "shape": parsed.shape,
            "pixels": "uint8, divided by 255" if parsed.x.dtype == np.uint8 else "float32",
            "split": {"train": n - n_val, "validation": n_val,
                      "test": 0 if parsed.y_test is None else len(parsed.y_test)}}


# -- the stored form --------------------------------------------------------------------

def relative_path(dataset_id: str, kind: str) -> str:
    """Built from the dataset's id alone: nothing a user sent ever names a path."""
    if not ID.fullmatch(dataset_id) or kind not in ("images", "text"):
        raise ValueError("dataset paths are built from ids only")
    return f"datasets/{dataset_id}.{'npz' if kind == 'images' else 'txt'}"


def resolve(root: Path, relative: str) -> Path:
    path = under_root(root, relative)
    if path is None:
        raise FormatError("dataset path leaves the artifact store")
    return path


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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"the stored dataset is unreadable: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FormatError("the stored dataset does not match its recorded sha256")
    # Checked when it was uploaded, under the limits of that day: only the bytes bound it now.
    limits = limits or Limits(max_examples=2**62, max_vocab=2**62, max_classes=2**62,
                              max_decompressed_bytes=len(data))
    if kind == "text":
        try:
            return Text(text=data.decode("utf-8"))
        except UnicodeDecodeError:
            raise FormatError("the stored dataset is not UTF-8") from None
    # scale=False: stored pixels are uint8 or float32 already; CSV features keep their range.
    return _npz(io.BytesIO(data), "stored dataset", limits, classes, scale=False)


def display_name(filename: str | None) -> str:
    """A client's file name as a label: its last component, printable, at most 200 chars."""
    base = PureWindowsPath(PurePosixPath(filename or "").name).name
    return "".join(c for c in base if c.isprintable())[:200]
