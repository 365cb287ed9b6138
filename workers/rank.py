"""One rank of a data-parallel job: `python -m workers.rank RUN_DIR`, started by the elastic
agent of its node (workers/distributed.py) with RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous's store in its environment.

Every rank builds the job's data and model exactly as the single-process runner does (the
same seed, so the same initial weights), wraps the model in DistributedDataParallel
(gloo on CPU, NCCL on CUDA with LOCAL_RANK's GPU) and trains on its share of each global
batch of `training.batch_size` examples (RankTrainer). Local rank 0 of node 0 alone
records, through the same JobCallbacks and BackgroundWriter as run_job; the other ranks
record nothing. Between batches the ranks agree on whether to stop with one all_reduce
(MAX) of a stop code: their node's (the Celery child's) and the recording rank's own (a
failed write, a prune). The outcome goes back to the node's child as
RUN_DIR/result-<local rank>.json.
"""

import contextlib
import json
import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import logs
from core.config import get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.lifecycle import JobStatus, StopReason
from core.store import open_store
from models.data import ImageData, TextData
from models.spec import JobSpec
from workers import recorder
from workers.batches import Order
from workers.distributed import CHANNEL_FILE, FAILED, TASK_FILE, batch_share
from workers.faults import TrainingError
from workers.node_channel import REASONS, NodeChannel, code_of
from workers.orphans import die_with_parent, end_now
from workers.recorder import LeaseLost
from workers.runner import JobCallbacks, device_for, load_data, own_fault, transient
from workers.runtime import Runtime
from workers.train_state import Resume
from workers.trainer import Trainer
from workers.writer import BackgroundWriter

log = logging.getLogger(__name__)
# A collective that waits longer than this for a peer gives up (the rank fails and the
# agent restarts the gang): longer than any pause of one rank between batches (the
# recording rank encoding a checkpoint).
COLLECTIVE_TIMEOUT = timedelta(minutes=5)


class RankTrainer(Trainer):
    """The trainer of one rank: its share of every global batch, weighted so that DDP's
    average of the ranks' gradients is the 1-process gradient of the whole batch, and the
    round's training loss and accuracy summed over the ranks. Validation runs on every rank
    over the whole split (the same weights give the same figures, so schedules and early
    stopping decide alike everywhere, and no rank waits on another's evaluation)."""

    def __init__(self, spec: JobSpec, data: ImageData | TextData, device: torch.device, *,
                 rank: int, world: int, records: bool) -> None:
        super().__init__(spec, data, device)
        self.rank, self.world, self.records = rank, world, records

    def restore(self, resume: Resume) -> None:
        super().restore(resume)
        if self.position is not None and not self.records:
            # An interrupted round's sums are the gang's (all-reduced when it stopped): one
            # rank carries them on, or the next all-reduce would count them once per rank.
            self.position.loss_sum = self.position.correct = 0.0

    def parallelize(self) -> None:
        """Wrap the model for training once its weights are final (fresh, resumed or
        init_from): DDP checks that every rank's are the same shape and broadcasts rank 0's."""
        if not self.records:
            # Dropout masks: the recording rank draws from the job's stream (checkpointed,
            # as a 1-process run's); the others from streams of their own, so that their
            # masks are not copies of it.
            torch.manual_seed(self.spec.training.seed * 1_000_003 + 7919 * self.rank
                              + self.step)
        if self.device.type == "cuda":
            # Batch statistics over the whole global batch; on CPU (gloo) SyncBatchNorm is
            # not available and each rank normalizes by its own share, as plain DDP does.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.train_module = DistributedDataParallel(self.model, device_ids=ids)

    def share(self, order: Order, start: int, size: int) -> tuple[torch.Tensor, float]:
        batch = min(size, len(self.train_set) - start)  # the epoch's last may be short
        lo, hi = batch_share(batch, self.rank, self.world)
        # DDP averages over `world` ranks: a share's mean loss counts (hi - lo) / batch of
        # the batch's, times world.
        return order[start + lo:start + hi], (hi - lo) * self.world / batch

    def weighted(self, loss: torch.Tensor, logits: torch.Tensor, weight: float
                 ) -> torch.Tensor:
        # An empty share's mean loss is NaN: a zero instead, which still reaches every
        # parameter, so that this rank's (zero) gradients join DDP's all-reduce.
        return loss * weight if weight else logits.sum() * 0.0

    def totals(self, loss_sum: torch.Tensor, hits: int) -> tuple[float, float]:
        both = torch.stack([loss_sum.double(),
                            torch.tensor(float(hits), dtype=torch.float64, device=self.device)])
        dist.all_reduce(both)
        loss, correct = both.tolist()
        return loss, correct

    def _checkpoint(self, callbacks: Any, metrics: dict[str, float], *,
                    is_best: bool = False) -> None:
        if self.records:
            super()._checkpoint(callbacks, metrics, is_best=is_best)
        else:  # nothing to write: only keep the bookkeeping the loop reads
            self.checkpointed_epoch = self.epoch
            self._checkpointed_at = time.monotonic()


class RankBeat:
    """What JobCallbacks takes for a heartbeat in the recording rank (the node's child holds
    the real one): the examples trained go to the channel, for the child's heartbeat to
    add to the job's usage; a prune (a sweep's pruner) comes back as a reason."""

    def __init__(self, channel: NodeChannel) -> None:
        self._channel = channel
        self.reason: str | None = None

    @property
    def examples(self) -> int:
        return self._channel.examples

    @examples.setter
    def examples(self, value: int) -> None:
        self._channel.examples = value

    def request_stop(self, reason: StopReason) -> None:
        self.reason = self.reason or reason


class RankCallbacks:
    """The trainer's callbacks in a rank: the agreed stop reason, and the recording rank's
    JobCallbacks (None elsewhere)."""

    # The stop flag's all-reduce costs ~0.2 ms on gloo (2 ranks, this machine): a tenth
    # of a batch of the seed MLP's, but as much as a whole batch of a tiny model. So it
    # runs every `every` batches, `every` chosen so that checks come about this often.
    check_seconds = 0.02
    max_every = 64

    def __init__(self, channel: NodeChannel, group: dist.ProcessGroup | None,
                 job: JobCallbacks | None, writer: BackgroundWriter | None) -> None:
        self._channel, self._group, self._job, self._writer = channel, group, job, writer
        # [stop code, batches until the next check]: on the CPU, a gloo group's.
        self._flag = torch.zeros(2, dtype=torch.int64)
        self.agreed: str | None = None
        self.checks = 0  # all-reduces so far
        self._calls, self._next = 0, 1  # stop_reason calls; the call of the next check
        self._checked_call, self._checked_at = 0, time.perf_counter()

    def _local(self) -> str | None:
        if self._job is None:
            return None
        assert self._writer is not None
        if isinstance(self._writer.error, LeaseLost):
            return StopReason.LEASE_LOST
        return self._job.stop_reason()

    def stop_reason(self) -> str | None:
        """Between batches: the reason every rank agreed to stop for, or None. One
        all_reduce (MAX) of [stop code, proposed interval] every few batches: the first
        code above 0 stops all ranks at the same batch; each rank proposes the batches that
        take it `check_seconds`, and all take the largest, so all check at the same ones."""
        self._calls += 1
        if self.agreed is not None or self._calls < self._next:
            return self.agreed
        now = time.perf_counter()
        per_batch = (now - self._checked_at) / (self._calls - self._checked_call)
        self._flag[0] = max(self._channel.stop_code(), code_of(self._local()))
        self._flag[1] = max(1, min(self.max_every, int(self.check_seconds / per_batch)
                                   if per_batch > 0 else self.max_every))
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group)
        self.checks += 1
        code, every = int(self._flag[0]), int(self._flag[1])
        self._next, self._checked_call, self._checked_at = self._calls + every, self._calls, now
        self.agreed = REASONS[code] if code else None
        return self.agreed

    @contextlib.contextmanager
    def _writes(self) -> Any:
        """A write that failed is not raised here, in one rank alone, where the others
        would wait for it at their next collective: the failure becomes the recording
        rank's stop reason at the next batch, which every rank then obeys."""
        try:
            yield
        except Exception as exc:
            if self._writer is None or exc is not self._writer.error:
                raise

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._job is not None:
            with self._writes():
                self._job.on_epoch(epoch, metrics)

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        if self._job is not None:
            with self._writes():
                self._job.on_checkpoint(epoch, tensors, meta)


class GangBroken(Exception):
    """A collective failed: a peer rank or node is gone. Not the job's fault: the rank exits
    with an error, and the elastic agent restarts the gang (or gives up: a lost gang)."""


# What gloo and NCCL put in the messages of the errors of a collective whose peer is gone.
_COLLECTIVE_MARKERS = ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe")


def _collective_failure(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, dist.DistError) or (
                isinstance(exc, RuntimeError) and any(m in str(exc) for m in _COLLECTIVE_MARKERS)):
            return True
        exc = exc.__cause__
    return False


@contextlib.contextmanager
def _peers_fault() -> Any:
    """Around own_fault: a collective that failed inside the training loop (DDP's gradient
    all-reduce, the stop flag's, the round's sums) is the gang's trouble, not the job's,
    though own_fault would take it for the job's own error."""
    try:
        yield
    except GangBroken:
        raise
    except Exception as exc:
        if _collective_failure(exc):
            raise GangBroken(str(exc)) from exc
        raise


def _resume(rt: Runtime, job_id: str, device: torch.device, records: bool,
            group: dist.ProcessGroup | None) -> Resume | None:
    """The recording rank prepares the resume (what follows the newest good checkpoint is
    dropped) while the others wait; then they read that same checkpoint."""
    resume = recorder.prepare_resume(rt, job_id, str(device)) if records else None
    dist.barrier(group=group)
    return resume if records else recorder.latest_resume(rt, job_id)


def _train(rt: Runtime, task: dict[str, Any], spec: JobSpec, device: torch.device,
           channel: NodeChannel, group: dist.ProcessGroup | None) -> dict[str, Any]:
    job_id = task["job_id"]
    rank, world = dist.get_rank(), dist.get_world_size()
    records = task["node"]["node_rank"] == 0 and int(os.environ["LOCAL_RANK"]) == 0
    writer = job = None
    if records:
        writer = BackgroundWriter(transient=transient, retry_seconds=rt.settings.lease_seconds)
        job = JobCallbacks(rt, job_id, RankBeat(channel), writer, None, task["sweep_id"],
                           world_size=world)
    try:
        data = load_data(spec, rt)
        if job is not None:
            job.origin = recorder.describe_origin(rt, job_id, data)
        with own_fault(writer):
            trainer = RankTrainer(spec, data, device, rank=rank, world=world, records=records)
        if job is not None:
            job.epoch_examples = len(trainer.train_set)
        resume = _resume(rt, job_id, device, records, group)
        if resume is not None:
            trainer.restore(resume)
        elif spec.init_from:
            trainer.load_weights(recorder.model_weights(rt, spec.init_from))
        trainer.parallelize()
        callbacks = RankCallbacks(channel, group, job, writer)
        with _peers_fault(), own_fault(writer):
            outcome = trainer.run(callbacks)
        log.info("rank %d of %d: %s after %s %d", rank, world, outcome,
                 "step" if spec.training.max_steps else "epoch", trainer.epoch)
        if job is None or writer is None:
            return {"outcome": outcome}
        job.flush_metrics()
        writer.flush()
        with own_fault(writer):
            test = trainer.test_metrics() if outcome == JobStatus.SUCCEEDED else {}
        return {"outcome": outcome, "model_epoch": trainer.model_epoch, "test_metrics": test}
    except LeaseLost:
        return {"outcome": StopReason.LEASE_LOST, "abort": True}
    except Exception as exc:
        if writer is None or exc is not writer.error:
            raise
        # The last writes failed after the ranks had finished together: as run_job would,
        # leave the job to be retried once its lease runs out.
        return {"outcome": StopReason.WRITE_FAILED}
    finally:
        if writer is not None:
            if job is not None:
                with contextlib.suppress(Exception):  # a failing run's last epochs
                    job.flush_metrics()
            writer.close()


def _device(spec: JobSpec, queue: str, local_rank: int) -> torch.device:
    """The job's device (runner.device_for); on CUDA, the GPU of this local rank."""
    device = device_for(spec, queue)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise TrainingError(f"resources.procs_per_node asks for a GPU per process, and this "
                            f"worker sees {torch.cuda.device_count()}")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _write_result(run_dir: Path, local_rank: int, result: dict[str, Any]) -> None:
    temporary = run_dir / f".result-{local_rank}.tmp"
    temporary.write_text(json.dumps(result))
    os.replace(temporary, run_dir / f"result-{local_rank}.json")  # whole or absent


def main(run_dir: Path) -> int:
    die_with_parent()
    task = json.loads((run_dir / TASK_FILE).read_text())
    settings = get_settings()
    logs.configure(settings.log_level)
    torch.set_num_threads(task["threads"])
    local_rank = int(os.environ["LOCAL_RANK"])
    # The lease is held under the name of the Celery child that claimed the job: the
    # recording rank writes as it.
    rt = Runtime(settings=settings, sessions=make_sessionmaker(make_engine(settings)),
                 store=open_store(settings), name=task["worker"])
    spec = JobSpec.model_validate(task["spec"])
    channel = NodeChannel(run_dir / CHANNEL_FILE)
    with logs.job_context(task["job_id"][:64]):
        try:
            device = _device(spec, task["queue"], local_rank)
            cuda = device.type == "cuda"
            dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                    device_id=device if cuda else None)
            # The stop flag and barriers go over gloo on the CPU even where gradients go
            # over NCCL: reading a CUDA flag would stall the GPU's queue every batch.
            group = dist.new_group(backend="gloo") if cuda else None
            result = _train(rt, task, spec, device, channel, group)
        except (TrainingError, torch.OutOfMemoryError) as exc:
            log.warning("rank %s: the job's training failed: %s", local_rank, exc)
            error = str(exc) if isinstance(exc, TrainingError) else (
                "out of memory on this job's own model and batch size; make them smaller")
            result = {"outcome": FAILED, "error": error, "abort": True}
        finally:
            channel.close()
            if dist.is_initialized():
                dist.destroy_process_group()
    _write_result(run_dir, local_rank, result)
    log.info("local rank %d: result written (%s)", local_rank, result["outcome"])
    return 0


if __name__ == "__main__":
    end_now(main(Path(sys.argv[1])))
