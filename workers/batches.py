"""A job's data as the training loop reads it: batches by index, and the count of correct
training predictions.

Every kind of data answers `batch(index)` with (inputs, targets) on the device. Small data
held in memory (the built-ins; a text's windows made once) is moved to the device once and
indexed there. An upload is
a view of its stored map: a batch reads its rows (or its character windows, computed from
offsets into the ids) from the map and is scaled as it is read (pixels / 255), and the pages
it read are handed back every RELEASE_BYTES, so a worker's memory stays the same whatever
the dataset's size.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from models import mapped
from models.data import ImageData, TextData, window_count
from workers.faults import TrainingError

# Training logits wait for their argmax until this many values are pending. A small
# classifier's step is short enough that an argmax per batch shows in its time, so its
# logits are counted once an epoch; a character model's 64x64xvocab logits are past the
# limit alone and are counted at once, as holding several (and concatenating them) costs
# more than it saves.
PENDING_LOGITS = 1 << 16
PAGE = 4096
RELEASE_BYTES = 32 << 20  # file pages mapped into this process before they are handed back
# Rows read from a map between looks at what is held: each may map a folio of the page
# cache (up to 2 MiB: 16 rows may map 32 MiB), and an evaluation batch of 1,024 evenly
# spaced windows would otherwise map hundreds of MiB before the first look.
READ_ROWS = 16
SHUFFLE_ROUNDS = 4
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
        np.uint64(0x94D049BB133111EB))


class Order(Protocol):
    """An epoch's data order: order[a:b] are the examples at positions a..b-1."""

    def __getitem__(self, positions: slice) -> torch.Tensor: ...


class Batches(Protocol):
    index_device: torch.device  # where the loop builds the indices it passes to `batch`
    targets_per_example: int

    def __len__(self) -> int: ...

    def order(self, key: int) -> Order:
        """A random order of the examples, from `key` alone."""

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every bit of x reaches every bit of the result."""
    x = (x ^ (x >> np.uint64(30))) * _MIX[1]
    x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


class Shuffle:
    """A random permutation of range(n) that holds nothing per example: a position's example
    is computed when asked for (a Feistel network over the next power of four, keyed by
    `key`, walked until it lands below n). An epoch's order of a mapped dataset costs a few
    numbers, where a drawn permutation would cost 8 bytes an example (268 MB for the 33.5
    million windows of a 2 GiB corpus)."""

    def __init__(self, n: int, key: int) -> None:
        self.n = n
        self.half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
        self.keys = np.random.default_rng([key, n]).integers(
            0, 2**63, size=SHUFFLE_ROUNDS, dtype=np.uint64)

    def _permute(self, x: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self.half), np.uint64((1 << self.half) - 1)
        left, right = x >> half, x & mask
        for key in self.keys:
            left, right = right, left ^ (_mix((right + key) * _MIX[0]) & mask)
        return (left << half) | right

    def __getitem__(self, positions: slice) -> torch.Tensor:
        start, stop, _ = positions.indices(self.n)
        x = self._permute(np.arange(start, stop, dtype=np.uint64))
        outside = x >= self.n
        while outside.any():  # cycle walking: a bijection of [0, n) in the end
            x[outside] = self._permute(x[outside])
            outside = x >= self.n
        return torch.from_numpy(x.astype(np.int64))


def _drawn_order(n: int, key: int, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(key)).to(device)


def as_inputs(x: torch.Tensor) -> torch.Tensor:
    """What the models see: uint8 pixels divided by 255, float features as they are."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class TensorBatches:
    """Inputs and targets held as tensors on the device, batched by index."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def index_device(self) -> torch.device:
        return self.x.device

    @property
    def targets_per_example(self) -> int:
        return self.y[0].numel() if len(self.y) else 1

    def __len__(self) -> int:
        return len(self.y)

    def order(self, key: int) -> torch.Tensor:
        return _drawn_order(len(self), key, self.index_device)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


class _Pages:
    """Hands a map's pages back once this process holds RELEASE_BYTES more of file pages
    than it did (/proc/self/statm's shared pages). Measured, not estimated: a fault maps a
    whole folio of the page cache, often hundreds of KiB for a window of 65 bytes."""

    def __init__(self, source: mapped.Mapped | None) -> None:
        self.source = source
        self._base = self._held() if source is not None else 0

    @staticmethod
    def _held() -> int | None:
        try:  # read afresh each time (~10 us): an fd kept open would outlive a fork
            with open("/proc/self/statm", "rb") as handle:
                return int(handle.read().split()[2]) * PAGE
        except OSError:
            return None  # no /proc: hand them back after every batch

    def read(self) -> None:
        """After a batch was read from the map."""
        if self.source is None:
            return
        held = self._held()
        if held is None or self._base is None or held - self._base >= RELEASE_BYTES:
            self.source.release()
            self._base = self._held()


@dataclass
class MappedImages:
    """Rows of mapped examples, read and scaled a batch at a time."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray  # this split's rows of x
    device: torch.device
    pages: _Pages = field(default_factory=lambda: _Pages(None))

    index_device = torch.device("cpu")
    targets_per_example = 1

    def __len__(self) -> int:
        return len(self.rows)

    def order(self, key: int) -> Shuffle:
        return Shuffle(len(self), key)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[index.numpy()]
        x = np.empty((len(rows), *self.x.shape[1:]), dtype=self.x.dtype)
        for at in range(0, len(rows), READ_ROWS):
            x[at:at + READ_ROWS] = self.x[rows[at:at + READ_ROWS]]
            self.pages.read()
        y = torch.from_numpy(self.y[rows].astype(np.int64)).to(self.device)
        return as_inputs(torch.from_numpy(x).to(self.device)), y


@dataclass
class Windows:
    """Non-overlapping windows of seq_len + 1 character ids (one shared with the next),
    input [:-1] and target [1:], read from offsets into the ids: window i starts at
    start + i * seq_len. Never materialized."""

    ids: np.ndarray  # a view of the map
    start: int
    count: int
    seq_len: int
    device: torch.device
    pages: _Pages = field(default_factory=lambda: _Pages(None))

    index_device = torch.device("cpu")

    def __post_init__(self) -> None:
        self._span = np.arange(self.seq_len + 1)

    @property
    def targets_per_example(self) -> int:
        return self.seq_len

    def __len__(self) -> int:
        return self.count

    def order(self, key: int) -> Shuffle:
        return Shuffle(len(self), key)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = self.start + index.numpy().astype(np.int64) * self.seq_len
        ids = np.empty((len(offsets), self.seq_len + 1), dtype=np.int64)
        for at in range(0, len(offsets), READ_ROWS):
            ids[at:at + READ_ROWS] = self.ids[offsets[at:at + READ_ROWS, None] + self._span]
            self.pages.read()
        windows = torch.from_numpy(ids).to(self.device)
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def _windows_in_memory(ids: np.ndarray, seq_len: int, device: torch.device) -> TensorBatches:
    """Small text held in memory: its windows made once, on the device, and indexed there."""
    tensor = torch.from_numpy(ids.astype(np.int64))
    windows = tensor.unfold(0, seq_len + 1, seq_len).contiguous().to(device)
    return TensorBatches(windows[:, :-1], windows[:, 1:])


def _text_batches(data: TextData, seq_len: int, device: torch.device
                  ) -> tuple[Windows | TensorBatches, Windows | TensorBatches | None]:
    if window_count(data.split, seq_len) == 0:
        raise TrainingError(f"training text is shorter than seq_len + 1 = {seq_len + 1}")
    held = len(data.ids) - data.split
    val_len = min(seq_len, held - 1)
    if data.source is None:
        return (_windows_in_memory(data.train, seq_len, device),
                _windows_in_memory(data.val, val_len, device) if held >= 2 else None)
    pages = _Pages(data.source)
    train = Windows(data.ids, 0, window_count(data.split, seq_len), seq_len, device, pages)
    if held < 2:
        return train, None
    return train, Windows(data.ids, data.split, window_count(held, val_len), val_len, device,
                          pages)


def _image_batches(x: np.ndarray, y: np.ndarray, rows: np.ndarray | None, device: torch.device,
                   source: mapped.Mapped | None) -> TensorBatches | MappedImages:
    if source is None:  # small and in memory: on the device, once
        if rows is not None:
            x, y = x[rows], y[rows]
        return TensorBatches(as_inputs(torch.from_numpy(np.ascontiguousarray(x)).to(device)),
                             torch.from_numpy(y.astype(np.int64)).to(device))
    all_rows = np.arange(len(y)) if rows is None else rows
    return MappedImages(x, y, all_rows, device, _Pages(source))


def train_and_val_batches(data: ImageData | TextData, seq_len: int,
                          device: torch.device) -> tuple[Batches, Batches | None]:
    if isinstance(data, TextData):
        return _text_batches(data, seq_len, device)
    train = _image_batches(data.x, data.y, data.train_rows, device, data.source)
    val = (_image_batches(data.x, data.y, data.val_rows, device, data.source)
           if len(data.val_rows) else None)
    return train, val


def batches_of_test_split(data: ImageData | TextData, device: torch.device) -> Batches | None:
    if not isinstance(data, ImageData) or data.x_test is None or data.y_test is None \
            or not len(data.y_test):
        return None
    return _image_batches(data.x_test, data.y_test, None, device, data.source)


def data_info(data: ImageData | TextData) -> dict[str, Any]:
    if isinstance(data, ImageData):
        return {"classes": data.classes, "shape": data.shape}
    return {"vocab": data.vocab}


class HitCounter:
    """Correct training predictions, counted a few batches at a time.

    Counts are integers: however the batches are grouped, the total is the same, so a run
    resumed mid-way counts exactly what an uninterrupted one does.
    """

    def __init__(self, device: torch.device) -> None:
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_values = 0
        # Kept on the device: a .item() per group would stall a GPU.
        self._hits = torch.zeros((), dtype=torch.long, device=device)

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self._pending.append((logits.detach(), targets))
        self._pending_values += logits.numel()
        if self._pending_values >= PENDING_LOGITS:
            self._count()

    def _count(self) -> None:
        if not self._pending:
            return
        if len(self._pending) == 1:
            logits, targets = self._pending[0]
        else:
            logits = torch.cat([p[0] for p in self._pending])
            targets = torch.cat([p[1] for p in self._pending])
        self._hits += (logits.argmax(-1) == targets).sum()
        self._pending, self._pending_values = [], 0

    def total(self) -> int:
        self._count()
        return int(self._hits.item())
