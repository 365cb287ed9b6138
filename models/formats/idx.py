"""The idx format: the MNIST IDX pair (images and labels), as two files or in a tar, with
an optional second pair for the test split (named t10k or test)."""

from pathlib import Path, PurePosixPath

import numpy as np

from models.archive import Budget, FormatError, unpack
from models.example_arrays import Images, Limits, checked_images
from models.idx import IdxError, parse_idx

Found = tuple[str, str, np.ndarray]  # (multipart field, file name, array)


def _is_test(name: str) -> bool:
    base = PurePosixPath(name).name.lower()
    return "t10k" in base or "test" in base


def _read_all(parts: list[tuple[str, Path, str]], limits: Limits) -> list[Found]:
    budget = Budget(limits.max_decompressed_bytes)
    found: list[Found] = []
    for field, path, name in parts:
        for blob in unpack(path, name, budget):
            base = PurePosixPath(blob.name).name
            # A tar may carry a README or editor files beside the IDX ones: skip those.
            if blob.in_tar and (base.startswith(".") or blob.data[:2] != b"\0\0"):
                continue
            try:
                found.append((field, blob.name, parse_idx(blob.data, blob.name)))
            except IdxError as exc:
                raise FormatError(str(exc), field=field) from None
    return found


def _pairs(found: list[Found]) -> list[list[Found]]:
    """[images, labels] for the training pair, then the test pair if there is one."""
    images = [f for f in found if f[2].ndim == 3]
    labels = [f for f in found if f[2].ndim == 1]
    if other := [f for f in found if f[2].ndim not in (1, 3)]:
        raise FormatError(f"{other[0][1]} has rank {other[0][2].ndim}; expected images "
                          "(N, rows, columns) or labels (N)", field=other[0][0])
    if not (len(images) == len(labels) and len(images) in (1, 2)):
        raise FormatError(f"found {len(images)} IDX image file(s) and {len(labels)} label "
                          "file(s); send one of each (and optionally a t10k/test pair)")
    if len(images) == 1:
        return [[images[0], labels[0]]]
    train = [f for f in images + labels if not _is_test(f[1])]
    test = [f for f in images + labels if _is_test(f[1])]
    if len(train) != 2 or len(test) != 2:
        raise FormatError("two IDX pairs, but not one named t10k/test and one not")
    pairs = [sorted(train, key=lambda f: f[2].ndim, reverse=True),
             sorted(test, key=lambda f: f[2].ndim, reverse=True)]
    if any(pair[0][2].ndim != 3 or pair[1][2].ndim != 1 for pair in pairs):
        raise FormatError("two IDX pairs, but the t10k/test files are not one images "
                          "and one labels file")
    return pairs


def _check_pair(images: Found, labels: Found) -> None:
    (field, name, x), (lfield, lname, y) = images, labels
    if x.dtype != np.uint8:
        raise FormatError(f"{name} holds {x.dtype}; IDX images must be unsigned bytes",
                          field=field)
    if y.dtype.kind not in "iu":
        raise FormatError(f"{lname} holds {y.dtype}; labels must be integers", field=lfield)
    if len(x) != len(y):
        raise FormatError(f"{name} has {len(x):,} images but {lname} has {len(y):,} "
                          "labels", field=lfield)


def idx_images(parts: list[tuple[str, Path, str]], limits: Limits) -> Images:
    """`parts`: (multipart field, path, file name) of each uploaded file."""
    pairs = _pairs(_read_all(parts, limits))
    for images, labels in pairs:
        _check_pair(images, labels)
    (_, name, x), (_, _, y) = pairs[0]
    test_xy = (pairs[1][0][2], pairs[1][1][2]) if len(pairs) == 2 else None
    return checked_images(x, y, None, name, limits, test_xy)
