"""A dataset as a user's own PyTorch script holds it: whole tensors in memory, images scaled
to float32 and character windows materialized (the bare loops the benchmarks compare the
service against)."""

import numpy as np
import torch

from models.data import ImageData, TextData


def windows(ids: np.ndarray, seq_len: int) -> torch.Tensor:
    """Non-overlapping windows of seq_len + 1 ids: input is [:-1], target is [1:]."""
    tensor = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    if len(tensor) < seq_len + 1:
        return tensor.new_empty((0, seq_len + 1))
    return tensor.unfold(0, seq_len + 1, seq_len).contiguous()


def split_tensors(data: ImageData | TextData, seq_len: int) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val), as the trainer splits the data."""
    if isinstance(data, ImageData):
        x = torch.from_numpy(np.ascontiguousarray(data.x))
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        y = torch.from_numpy(data.y.astype(np.int64))
        train, val = torch.from_numpy(data.train_rows), torch.from_numpy(data.val_rows)
        return x[train], y[train], x[val], y[val]
    train_w, val_w = windows(data.train, seq_len), windows(data.val, seq_len)
    return train_w[:, :-1], train_w[:, 1:], val_w[:, :-1], val_w[:, 1:]
