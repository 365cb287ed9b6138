"""How the training loop reads a job's data: correct predictions counted in groups."""

import pytest
import torch

from workers import batches
from workers.batches import HitCounter


@pytest.mark.parametrize("pending", [1, 25, 1 << 22], ids=["each-batch", "some", "epoch"])
def test_hits_count_alike_however_the_batches_are_grouped(
        monkeypatch: pytest.MonkeyPatch, pending: int) -> None:
    monkeypatch.setattr(batches, "PENDING_LOGITS", pending)
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 4, (50,), generator=generator)
    order = torch.randperm(50, generator=generator)
    logits = torch.randn(50, 4, generator=generator)
    first = 6  # resumed mid-epoch: the examples before it are counted elsewhere
    counter = HitCounter(torch.device("cpu"))
    for start in range(first, 50, 8):
        counter.add(logits[start:start + 8], targets[order[start:start + 8]])
    expected = (logits[first:].argmax(-1) == targets[order[first:]]).sum().item()
    assert 0 < expected < 44
    assert counter.total() == expected
