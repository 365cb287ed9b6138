"""A job's data as the training loop reads it: tensors on the device, batched by index, and
the count of an epoch's correct training predictions."""

from dataclasses import dataclass
from typing import Any

import torch

from models.data import ImageData, TextData, windows
from workers.faults import TrainingError

# Training logits wait for their argmax until this many values are pending. A small
# classifier's step is short enough that an argmax per batch shows in its time, so its
# logits are counted once an epoch; a character model's 64x64xvocab logits are past the
# limit alone and are counted at once, as holding several (and concatenating them) costs
# more than it saves.
PENDING_LOGITS = 1 << 16


@dataclass
class Batches:
    """Inputs and targets held as tensors on the device, batched by index."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def train_and_val_batches(data: ImageData | TextData, seq_len: int,
                          device: torch.device) -> tuple[Batches, Batches | None]:
    if isinstance(data, ImageData):
        train = Batches(data.x_train.to(device), data.y_train.to(device))
        val = Batches(data.x_val.to(device), data.y_val.to(device)) if len(data.y_val) else None
        return train, val
    train_windows = windows(data.train, seq_len)
    if len(train_windows) == 0:
        raise TrainingError(f"training text is shorter than seq_len + 1 = {seq_len + 1}")
    train_windows = train_windows.to(device)
    train = Batches(train_windows[:, :-1], train_windows[:, 1:])
    val = None
    if len(data.val) >= 2:
        val_windows = windows(data.val, min(seq_len, len(data.val) - 1)).to(device)
        val = Batches(val_windows[:, :-1], val_windows[:, 1:])
    return train, val


def batches_of_test_split(data: ImageData | TextData, device: torch.device) -> Batches | None:
    x_test = getattr(data, "x_test", None)
    if x_test is None or not len(x_test):
        return None
    return Batches(x_test.to(device), data.y_test.to(device))  # type: ignore[union-attr]


def data_info(data: ImageData | TextData) -> dict[str, Any]:
    if isinstance(data, ImageData):
        return {"classes": data.classes, "shape": data.shape}
    return {"vocab": data.vocab}


class HitCounter:
    """Correct training predictions of an epoch, counted a few batches at a time.

    Counts are integers: however the batches are grouped, the total is the same, so an epoch
    resumed mid-way counts exactly what an uninterrupted one does.
    """

    def __init__(self, targets: torch.Tensor, order: torch.Tensor, first: int) -> None:
        self._targets, self._order = targets, order
        self._start = self._end = first
        self._pending: list[torch.Tensor] = []
        self._pending_values = 0
        # Kept on the device: a .item() per group would stall a GPU.
        self._hits = torch.zeros((), dtype=torch.long, device=targets.device)

    def add(self, logits: torch.Tensor, end: int) -> None:
        """Logits of the examples order[previous end:end]."""
        self._pending.append(logits.detach())
        self._pending_values += logits.numel()
        self._end = end
        if self._pending_values >= PENDING_LOGITS:
            self._count()

    def _count(self) -> None:
        if not self._pending:
            return
        pending = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
        predicted = pending.argmax(-1)
        self._hits += (predicted == self._targets[self._order[self._start:self._end]]).sum()
        self._start, self._pending, self._pending_values = self._end, [], 0

    def total(self) -> int:
        self._count()
        return int(self._hits.item())
