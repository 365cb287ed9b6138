"""The ranks of tests/unit/test_distributed.py: `python -m torch.distributed.run --standalone
--nproc-per-node=W -m tests.unit.ddp_ranks OUT`, with OUT/spec.json the job's spec.

Each rank trains the job twice with the trainer of a data-parallel job's rank
(workers/rank.py) and its stop agreement, without a database: once whole; once stopped
mid-epoch by a reason that only the LAST rank sees, then resumed in a fresh trainer from
the checkpoint rank 0 made there. Rank 0 writes what the test compares: the weights of
both runs and their metric rows; every rank writes where it stopped.
"""

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from core.lifecycle import StopReason
from models import checkpoint as ckpt
from models.data import load_builtin
from models.spec import JobSpec
from workers.node_channel import NodeChannel
from workers.rank import RankCallbacks, RankTrainer
from workers.train_state import Resume

CPU = torch.device("cpu")
STOP_AT_CHECK = 23  # mid-epoch 2 of the seed MLP's 15 batches an epoch


class Job:
    """Rank 0's stand-in for JobCallbacks: keeps the rows and the last checkpoint."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.checkpoint: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None

    def stop_reason(self) -> str | None:
        return None

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        self.checkpoint = ({k: v.clone() for k, v in tensors.items()}, meta)


class Writer:
    error = None


class LastRankStops(RankCallbacks):
    """A cancel that only the last rank's node sees, at its STOP_AT_CHECK-th check; every
    batch is checked."""

    check_seconds = 0.0

    def _local(self) -> str | None:
        last = dist.get_rank() == dist.get_world_size() - 1
        return StopReason.CANCEL if last and self.checks + 1 >= STOP_AT_CHECK else None


class Counted(RankCallbacks):
    """Ranks whose batches are ~1 ms: the stop flag is all-reduced every few batches."""

    check_seconds = 0.05


def _trainer(spec: JobSpec) -> RankTrainer:
    data = load_builtin(spec.dataset.removeprefix("builtin:"), None)
    rank, world = dist.get_rank(), dist.get_world_size()
    return RankTrainer(spec, data, CPU, rank=rank, world=world, records=rank == 0)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    spec = JobSpec.model_validate_json((out / "spec.json").read_text())
    channel = NodeChannel.create(out / f"channel-{rank}")
    job = Job() if rank == 0 else None

    trainer = _trainer(spec)
    trainer.parallelize()
    counted = Counted(channel, None, job, Writer())
    assert trainer.run(counted) == "succeeded"
    (out / f"checks-{rank}.json").write_text(json.dumps(
        {"checks": counted.checks, "batches": trainer.step}))
    if job is not None:
        save_file(trainer.model.state_dict(), out / "whole.safetensors")
        (out / "whole.json").write_text(json.dumps(job.epochs))

    job = Job() if rank == 0 else None
    trainer = _trainer(spec)
    trainer.parallelize()
    stops = LastRankStops(channel, None, job, Writer())
    reason = trainer.run(stops)
    assert trainer.position is not None
    (out / f"stop-{rank}.json").write_text(json.dumps(
        {"reason": reason, "checks": stops.checks, "epoch": trainer.epoch,
         "batch_start": trainer.position.batch_start}))
    if job is not None:
        assert job.checkpoint is not None
        data = ckpt.encode(*job.checkpoint)
        ckpt.write_atomic(out / "stopped.ckpt", data)
        (out / "stopped.sha256").write_text(hashlib.sha256(data).hexdigest())
    dist.barrier()
    tensors, meta = ckpt.load(out / "stopped.ckpt", (out / "stopped.sha256").read_text())
    trainer = _trainer(spec)
    trainer.restore(Resume(epoch=meta["epoch"], tensors=tensors, meta=meta))
    trainer.parallelize()
    job = Job() if rank == 0 else None
    assert trainer.run(RankCallbacks(channel, None, job, Writer())) == "succeeded"
    if job is not None:
        save_file(trainer.model.state_dict(), out / "resumed.safetensors")
        (out / "resumed.json").write_text(json.dumps(job.epochs))
    channel.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]))
