"""The training loop. Knows nothing of the database: it reports through `TrainerCallbacks`.

A run is a sequence of steps (batches) numbered across epochs: step s is batch s mod P of
epoch s // P + 1, P batches an epoch, and every epoch's data order comes from (seed, epoch).
The steps are grouped into rounds, each ending in a metric row (validation, schedule, early
stopping, maybe a checkpoint): an epoch, or with `training.max_steps` every `eval_every`
steps. `self.epoch` counts progress in the unit of those rows, epochs or steps, and is the
key of metric rows and checkpoints. Checkpoints carry model, optimizer and RNG state and
the step an interrupted round reached, so a resumed run continues exactly as if it had
never stopped. The data it reads is in workers/batches.py; what it starts from is in
workers/train_state.py.
"""

import contextlib
import math
import time
from dataclasses import asdict
from typing import Any, Protocol

import torch
from torch import nn

from core.lifecycle import JobStatus, StopReason
from models import registry
from models.checkpoint import pack_optimizer, prefixed, strip_prefix, unpack_optimizer
from models.data import ImageData, TextData
from models.layers import l2_penalty
from models.spec import JobSpec
from workers.batches import (
    Batches,
    HitCounter,
    Order,
    batches_of_test_split,
    data_info,
    train_and_val_batches,
)
from workers.faults import TrainingError
from workers.optimizers import make_optimizer
from workers.schedules import Stopper, make_scheduler, step_scheduler
from workers.train_state import InitialWeights, Position, Resume, restore_rng, rng_tensors

EVAL_BATCH = 1024
CHECKPOINT_SECONDS = 60.0


class TrainerCallbacks(Protocol):
    """What the loop asks and tells the code that runs it (a worker records a job's)."""

    def stop_reason(self) -> str | None:
        """Checked between batches: a StopReason, or None to go on."""

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None: ...


class Trainer:
    def __init__(self, spec: JobSpec, data: ImageData | TextData, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        # bf16 autocast on CUDA only: on CPU it is slower than fp32 and changes the numbers.
        self.autocast = spec.training.mixed_precision == "bf16" and device.type == "cuda"
        self.text = isinstance(data, TextData)
        self.info = data_info(data)
        self.train_set, self.val_set = train_and_val_batches(data, spec.training.seq_len,
                                                             device)
        self.test_set = batches_of_test_split(data, device)
        self.config = registry.config_from_spec(spec.model, self.info)
        torch.manual_seed(spec.training.seed)
        self.model: nn.Module = registry.build(spec.model.arch, self.config).to(device)
        # What the training steps call: the model itself here; its DistributedDataParallel
        # wrapper in a rank of a data-parallel job (workers/rank.py).
        self.train_module: nn.Module = self.model
        self.optimizer = make_optimizer(spec.optimizer, self.model.parameters())
        self.scheduler = make_scheduler(spec.training.lr_schedule, self.optimizer,
                                        spec.training.rounds)
        self.stopper = Stopper.from_spec(spec.training.early_stopping)
        self.per_epoch = -(-len(self.train_set) // spec.training.batch_size)  # batches
        self._order: tuple[int, Order] | None = None  # (epoch, its data order)
        # Progress in the unit of metric rows: epochs done, or steps done with max_steps.
        self.epoch = 0
        self.checkpointed_epoch: int | None = None
        self.position: Position | None = None  # set while an epoch is interrupted
        self.best_weights: dict[str, torch.Tensor] | None = None

    @property
    def model_epoch(self) -> int:
        """The epoch whose weights make the job's model: the best one under early stopping."""
        return self.stopper.best_epoch if self.stopper and self.stopper.best_epoch else self.epoch

    # -- checkpoints -------------------------------------------------------------------
    def state(self, metrics: dict[str, float], *, is_best: bool = False
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What a checkpoint holds. `partial`: stopped mid-epoch (a position to resume from);
        `is_best`: early stopping's best epoch so far. Neither is a metric."""
        optim_tensors, optim_meta = pack_optimizer(self.optimizer.state_dict())
        tensors = {**prefixed("model.", self.model.state_dict()), **optim_tensors,
                   **rng_tensors(self.device)}
        meta = {"arch": self.spec.model.arch, "config": registry.config_dict(self.config),
                "task": "char" if self.text else "classifier", "data": self.info,
                "epoch": self.epoch, "metrics": metrics, "is_best": is_best,
                "partial": self.position is not None, "optimizer": optim_meta,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "stopper": self.stopper.state() if self.stopper else None,
                "position": asdict(self.position) if self.position else None,
                "spec": self.spec.model_dump(mode="json")}
        return tensors, meta

    def restore(self, resume: Resume) -> None:
        """Continue the job from its own checkpoint: weights, optimizer, schedule, early
        stopping, RNG, and the position of an interrupted epoch."""
        self.model.load_state_dict(strip_prefix("model.", resume.tensors))
        self.optimizer.load_state_dict(unpack_optimizer(resume.tensors, resume.meta["optimizer"]))
        if self.scheduler and resume.meta.get("scheduler"):
            self.scheduler.load_state_dict(resume.meta["scheduler"])
        if self.stopper and resume.meta.get("stopper"):
            self.stopper = Stopper(**resume.meta["stopper"])
        if resume.meta.get("position"):
            self.position = Position(**resume.meta["position"])
        restore_rng(resume.tensors, self.device)
        self.epoch = self.checkpointed_epoch = resume.epoch

    def load_weights(self, weights: InitialWeights) -> None:
        """Start from another job's model weights (`init_from`); all else stays fresh."""
        self.model.load_state_dict(strip_prefix("model.", weights.tensors))

    # -- the loop ----------------------------------------------------------------------
    def run(self, callbacks: TrainerCallbacks) -> str:
        """Train to the last round or an early stop; returns JobStatus.SUCCEEDED, or the
        StopReason it stopped for."""
        training = self.spec.training
        total = training.progress_total
        metrics: dict[str, float] = {}
        self._checkpointed_at = time.monotonic()
        while self.epoch < total:
            started = time.perf_counter()
            train_stats = self.train_round(callbacks)
            if train_stats is None:
                reason = callbacks.stop_reason() or StopReason.CANCEL
                if reason != StopReason.LEASE_LOST and self.checkpointed_epoch != self.epoch:
                    # Mid-round state with its position: a resume continues exactly here.
                    # If the last whole round is checkpointed, replaying from it is as exact.
                    self._checkpoint(callbacks, metrics)
                return reason
            train_seconds = time.perf_counter() - started
            self.epoch = self._round_end()
            metrics = self._metrics(train_stats, train_seconds)
            if not math.isfinite(metrics["train_loss"]):
                raise TrainingError(f"training loss became {metrics['train_loss']} at "
                                    f"{self._where()}; try a lower learning rate or grad_clip")
            improved = self._track(metrics)
            step_scheduler(self.scheduler, training.lr_schedule, metrics)
            stop_early = bool(self.stopper and self.stopper.should_stop)
            metrics["seconds"] = time.perf_counter() - started
            callbacks.on_epoch(self.epoch, metrics)
            if improved or stop_early or self._due() or self.epoch == total:
                self._checkpoint(callbacks, metrics, is_best=improved)
            if stop_early:
                break
        return JobStatus.SUCCEEDED

    @property
    def step(self) -> int:
        """Steps done at the end of the last whole round."""
        return self.epoch if self.spec.training.max_steps else self.epoch * self.per_epoch

    def _round_end(self) -> int:
        """`self.epoch` once the round under way is done."""
        training = self.spec.training
        if training.max_steps is None:
            return self.epoch + 1
        assert training.eval_every is not None
        return min(self.epoch + training.eval_every, training.max_steps)

    def _rounds_done(self) -> int:
        every = self.spec.training.eval_every
        return -(-self.epoch // every) if every else self.epoch

    def _where(self) -> str:
        return f"step {self.epoch}" if self.spec.training.max_steps else f"epoch {self.epoch}"

    def _track(self, metrics: dict[str, float]) -> bool:
        if self.stopper is None:
            return False
        try:
            improved = self.stopper.update(self.epoch, metrics)
        except KeyError as exc:
            raise TrainingError(str(exc.args[0])) from exc
        if improved:
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return improved

    def test_metrics(self) -> dict[str, float]:
        """Loss and accuracy of the model's weights on the dataset's test split, if any."""
        if self.test_set is None:
            return {}
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        loss, accuracy = self.evaluate(self.test_set)
        return {"test_loss": loss, "test_accuracy": accuracy}

    def _due(self) -> bool:
        every = self.spec.training.checkpoint_every
        if every is not None:
            return self._rounds_done() % every == 0
        # By time, not by epochs: short epochs would otherwise spend more time saving than
        # training, and long ones would risk too much work between checkpoints.
        return time.monotonic() - self._checkpointed_at >= CHECKPOINT_SECONDS

    def _checkpoint(self, callbacks: TrainerCallbacks, metrics: dict[str, float], *,
                    is_best: bool = False) -> None:
        callbacks.on_checkpoint(self.epoch, *self.state(metrics, is_best=is_best))
        self.checkpointed_epoch = self.epoch
        self._checkpointed_at = time.monotonic()

    def _epoch_order(self, epoch: int) -> Order:
        """The data order of an epoch (counted from 1), from the seed and the epoch alone."""
        if self._order is None or self._order[0] != epoch:
            key = self.spec.training.seed * 1_000_003 + epoch
            self._order = (epoch, self.train_set.order(key))
        return self._order[1]

    def _examples(self, first: int, end: int) -> int:
        """Training examples in steps [first, end): whole batches, and each epoch's last."""
        size, n = self.spec.training.batch_size, len(self.train_set)
        return sum(min(size, n - (step % self.per_epoch) * size) for step in range(first, end))

    def train_round(self, callbacks: TrainerCallbacks) -> tuple[float, float, int] | None:
        """The steps of the round after `self.epoch` (from its position, if it was stopped
        mid-way): (loss sum, correct predictions, targets), or None if stopped first."""
        training = self.spec.training
        self.model.train()
        round_first = self.step
        resumed, self.position = self.position, None
        first = round_first
        if resumed is not None:
            first = (resumed.step if resumed.step is not None
                     else round_first + resumed.batch_start // training.batch_size)
        end = self._round_end() if training.max_steps else round_first + self.per_epoch
        earlier_hits = resumed.correct if resumed else 0.0
        loss_sum = torch.tensor(resumed.loss_sum if resumed else 0.0, device=self.device)
        hits = HitCounter(self.device)
        amp = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
               else contextlib.nullcontext())
        size = training.batch_size
        for step in range(first, end):
            epoch, offset = divmod(step, self.per_epoch)
            start = offset * size
            if callbacks.stop_reason() is not None:
                loss_total, hit_total = self.totals(loss_sum, hits.total())
                self.position = Position(start, loss_total, earlier_hits + hit_total,
                                         step if training.max_steps else None)
                return None
            index, weight = self.share(self._epoch_order(epoch + 1), start, size)
            x, y = self.train_set.batch(index)
            with amp:
                logits, loss = self.train_module(x, y)
            assert loss is not None
            objective = loss if weight == 1.0 else self.weighted(loss, logits, weight)
            if training.l2:
                objective = objective + training.l2 * l2_penalty(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if training.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), training.grad_clip)
            self.optimizer.step()
            # Added in order, batch by batch: a resumed round's float sum then rounds exactly
            # as an uninterrupted one's. Kept on the device: a .item() would stall a GPU.
            if y.numel():  # a rank's share of a short last batch may be empty
                loss_sum.add_(loss.detach(), alpha=y.numel())
            hits.add(logits, y)
        count = self._examples(round_first, end) * self.train_set.targets_per_example
        loss_total, hit_total = self.totals(loss_sum, hits.total())
        return loss_total, earlier_hits + hit_total, count

    # -- what a rank of a data-parallel job changes (workers/rank.py) --------------------
    def share(self, order: Order, start: int, size: int) -> tuple[torch.Tensor, float]:
        """The examples this process trains on of the global batch at `start`, and the
        weight of their mean loss in the objective: the whole batch, weight 1."""
        return order[start:start + size], 1.0

    def weighted(self, loss: torch.Tensor, logits: torch.Tensor, weight: float
                 ) -> torch.Tensor:
        """The objective of a share whose mean loss counts `weight` times."""
        return loss * weight

    def totals(self, loss_sum: torch.Tensor, hits: int) -> tuple[float, float]:
        """The round's loss sum and correct predictions so far, over every process."""
        return loss_sum.item(), float(hits)

    def train_one_epoch(self, epoch: int, callbacks: TrainerCallbacks
                        ) -> tuple[float, float, int] | None:
        """One whole epoch's round (without max_steps), for callers that step epochs."""
        assert epoch == self.epoch + 1 and not self.spec.training.max_steps
        return self.train_round(callbacks)

    @torch.no_grad()
    def evaluate(self, batches: Batches, limit: int | None = None) -> tuple[float, float]:
        """Mean loss and accuracy over the batches, or over `limit` evaluation batches of
        them, evenly spaced (the same ones every time)."""
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        n = len(batches)
        taken = n if limit is None else min(n, limit * EVAL_BATCH)
        for start in range(0, taken, EVAL_BATCH):
            index = torch.arange(start, min(start + EVAL_BATCH, taken),
                                 device=batches.index_device)
            if taken < n:
                index = index * n // taken
            x, y = batches.batch(index)
            logits, loss = self.model(x, y)
            assert loss is not None
            loss_sum += loss.item() * y.numel()
            correct += int((logits.argmax(-1) == y).sum().item())
            count += y.numel()
        return loss_sum / count, correct / count

    def _metrics(self, train_stats: tuple[float, float, int], seconds: float) -> dict[str, float]:
        loss_sum, correct, count = train_stats
        examples = count // self.train_set.targets_per_example
        metrics = {"train_loss": loss_sum / count,
                   "train_accuracy": correct / count,
                   "examples_per_s": examples / seconds if seconds else 0.0,
                   "lr": float(self.optimizer.param_groups[0]["lr"])}
        if self.spec.training.max_steps:
            steps = self.epoch - (self._rounds_done() - 1) * (self.spec.training.eval_every or 1)
            metrics |= {"step": self.epoch, "epoch": self.epoch / self.per_epoch,
                        "steps_per_s": steps / seconds if seconds else 0.0}
        if self.val_set is not None:
            metrics["val_loss"], metrics["val_accuracy"] = self.evaluate(
                self.val_set, self.spec.training.eval_batches)
        if self.text:
            metrics["train_bpc"] = metrics["train_loss"] / math.log(2)
            metrics["chars_per_s"] = count / seconds if seconds else 0.0
            if "val_loss" in metrics:
                metrics["val_bpc"] = metrics["val_loss"] / math.log(2)
                metrics["val_perplexity"] = math.exp(min(metrics["val_loss"], 700.0))
        return metrics
