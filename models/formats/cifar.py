"""The cifar10-bin format: CIFAR-10's binary records, as one file or the (gzipped) tar of
data_batch_*.bin, test_batch.bin and batches.meta.txt."""

from pathlib import Path, PurePosixPath

import numpy as np

from models.archive import Blob, Budget, FormatError, unpack
from models.example_arrays import Images, Limits, checked_images, checked_names

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue


def _cifar_records(blob: Blob) -> tuple[np.ndarray, np.ndarray]:
    size = len(blob.data)
    if size == 0 or size % CIFAR_RECORD:
        raise FormatError(f"{blob.name}: {size:,} bytes is not a whole number of "
                          f"{CIFAR_RECORD}-byte records (1 label byte + 3,072 pixel bytes); "
                          f"the last record is {size % CIFAR_RECORD or size:,} bytes long")
    records = np.frombuffer(blob.data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def cifar_images(path: Path, name: str, limits: Limits) -> Images:
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
