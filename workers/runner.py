"""One delivery of one job: lease it, load its data, train or resume it, record the end."""

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from sqlalchemy.exc import DBAPIError, OperationalError

from core.db.tables import Dataset
from core.lifecycle import FailureKind, JobStatus, StopReason
from core.store import ArtifactRefused, StoreUnavailable
from models import checkpoint as ckpt
from models.data import BUILTINS, ImageData, TextData, load_builtin, load_upload
from models.formats import FormatError
from models.spec import JobSpec
from workers import devices, lease, recorder, scheduler, shutdown, sweeps
from workers.cancel import CancelWatch, Stoppable
from workers.faults import TrainingError
from workers.recorder import LeaseLost
from workers.runtime import Runtime, runtime
from workers.trainer import Trainer
from workers.writer import BackgroundWriter

log = logging.getLogger(__name__)
METRICS_FLUSH_SECONDS = 0.25
MAX_ERROR_CHARS = 2000  # of an exception's message kept in the job's error


class Beat(Stoppable, Protocol):
    """What the callbacks report to: the lease's heartbeat (lease.Heartbeat), or in a rank
    of a data-parallel job its node channel (workers/rank.py RankBeat)."""

    examples: int


class JobCallbacks:
    """The trainer's callbacks for one job: stop checks, and its epochs and checkpoints
    recorded off the training thread in order."""

    def __init__(self, rt: Runtime, job_id: str, heartbeat: Beat,
                 writer: BackgroundWriter, deadline: float | None,
                 sweep_id: str | None = None, world_size: int = 1) -> None:
        self._rt, self._job_id, self._sweep_id = rt, job_id, sweep_id
        self._world_size = world_size  # processes training the job: each row says it
        self._heartbeat, self._writer, self._deadline = heartbeat, writer, deadline
        # The lineage of the model the first checkpoint makes (set once the data is loaded).
        self.origin: dict[str, Any] = {}
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._flushed = time.monotonic()
        self.epoch_examples = 0  # examples in one epoch: the usage each epoch adds

    def stop_reason(self) -> str | None:
        """Read between batches, so every check here is a memory read or a clock read."""
        if self._writer.error is not None:
            return StopReason.WRITE_FAILED
        if shutdown.requested():
            return StopReason.SHUTDOWN
        if self._deadline is not None and time.time() > self._deadline:
            return StopReason.TIME_LIMIT
        return self._heartbeat.reason

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._heartbeat.examples += self.epoch_examples
        # Short epochs are recorded a few at a time: one commit per epoch would bound a
        # tiny model's speed by the database's.
        self._pending.append((epoch, {**metrics, "world_size": self._world_size}))
        if self._sweep_id is not None:
            # A sweep's trial waits for its pruner's word on each epoch before the next one
            # starts, so that a pruned trial stops at the epoch it was judged on.
            self.flush_metrics()
            self._writer.flush()
        elif time.monotonic() - self._flushed >= METRICS_FLUSH_SECONDS:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._pending:
            self._writer.submit(recorder.record_epochs, self._rt, self._job_id, self._pending)
            if self._sweep_id is not None:  # a sweep's trial: its pruner is asked, in order
                self._writer.submit(sweeps.check_prune, self._rt, self._job_id, self._sweep_id,
                                    self._pending[0][0] - 1, self._heartbeat)
            self._pending = []
        self._flushed = time.monotonic()

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        # Encoded here: the tensors are live weights that the next batch will change.
        data = ckpt.encode(tensors, meta)
        self.flush_metrics()  # a checkpoint's epochs are all recorded before it is
        self._writer.submit(recorder.record_checkpoint, self._rt, self._job_id, epoch, data,
                            meta, self.origin)


def database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | DBAPIError) and (
        isinstance(exc, OperationalError) or exc.connection_invalidated)


def transient(exc: BaseException) -> bool:
    """What the background writer retries: the database or the store being away."""
    return database_unavailable(exc) or isinstance(exc, StoreUnavailable)


@contextlib.contextmanager
def own_fault(writer: BackgroundWriter | None) -> Iterator[None]:
    """Around the job's own code: building its model, the training loop (forward, backward,
    optimizer, schedule, metrics) and its test evaluation. What that raises comes from the
    job's spec or data and would be raised again by every retry, so it becomes a
    TrainingError: failed at once, with the real message. What the run's infrastructure
    raised through the callbacks (the writer's database and store errors, a lost lease) and a
    device that failed are passed on as they are, to be retried."""
    try:
        yield
    except (TrainingError, LeaseLost, torch.OutOfMemoryError, torch.AcceleratorError):
        raise
    except Exception as exc:
        if writer is not None and exc is writer.error:
            raise
        log.warning("the job's training raised", exc_info=True)
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        raise TrainingError(f"training raised {type(exc).__name__}: "
                            f"{message[:MAX_ERROR_CHARS]}") from exc


def device_for(spec: JobSpec, queue: str) -> torch.device:
    """CUDA for gpu-queue jobs (the GPU that CUDA_VISIBLE_DEVICES gives this worker)."""
    try:
        return devices.select_device(spec.device, queue)
    except devices.NoCudaError as exc:
        # Failed with a reason rather than raised: a retry would only reach a worker like
        # this one again, and a crash would burn attempts under a misleading error.
        raise TrainingError(str(exc)) from exc


def load_data(spec: JobSpec, rt: Runtime | None = None) -> ImageData | TextData:
    name = spec.dataset.removeprefix("builtin:")
    if spec.dataset.startswith("builtin:"):
        if name in BUILTINS:
            return load_builtin(name, spec.training.validation_fraction)
        raise TrainingError(f"dataset {spec.dataset} is not available to this worker")
    # An upload: its row says what it is; its key in the store is built from its id alone,
    # and it is fetched through this host's cache, verified (no filesystem is shared).
    rt = rt or runtime()
    with rt.sessions() as session:
        row = session.get(Dataset, spec.dataset)
        found = (row.kind, dict(row.info)) if row is not None else None
    if found is None:
        raise TrainingError(f"dataset {spec.dataset} no longer exists")
    try:
        return load_upload(rt.store.fetch, spec.dataset, *found,
                           spec.training.validation_fraction)
    except (FormatError, ArtifactRefused) as exc:
        raise TrainingError(f"dataset {spec.dataset} cannot be read: {exc}") from exc


def run_job(rt: Runtime, claimed: lease.Claim) -> str:
    """Run a job this worker has claimed (workers/scheduler.py) to its end."""
    job_id = claimed.job_id
    spec = JobSpec.model_validate(claimed.spec)
    limit = spec.training.time_limit_seconds or rt.settings.job_time_limit_seconds
    deadline = claimed.started_at.timestamp() + limit if limit else None
    with (lease.Heartbeat(rt, job_id, since=claimed.claimed_at) as heartbeat,
          CancelWatch(rt, job_id, heartbeat)):
        writer = BackgroundWriter(transient=transient,
                                  retry_seconds=rt.settings.lease_seconds)
        callbacks = JobCallbacks(rt, job_id, heartbeat, writer, deadline, claimed.sweep_id)
        try:
            device = device_for(spec, claimed.queue)
            data = load_data(spec)
            callbacks.origin = recorder.describe_origin(rt, job_id, data)
            with own_fault(writer):
                trainer = Trainer(spec, data, device)
            callbacks.epoch_examples = len(trainer.train_set)
            resume = recorder.prepare_resume(rt, job_id, str(device))
            if resume is not None:
                log.info("job %s resumes after epoch %d", job_id, resume.epoch)
                trainer.restore(resume)
            elif spec.init_from:
                trainer.load_weights(recorder.model_weights(rt, spec.init_from))
            with own_fault(writer):
                outcome = trainer.run(callbacks)
            callbacks.flush_metrics()
            writer.flush()
            with own_fault(writer):
                test = trainer.test_metrics() if outcome == JobStatus.SUCCEEDED else {}
        except LeaseLost:
            log.warning("job %s: lease lost, another worker owns it now", job_id)
            return StopReason.LEASE_LOST
        except (TrainingError, torch.OutOfMemoryError) as exc:
            callbacks.flush_metrics()
            writer.flush()
            heartbeat.settle()
            reason = str(exc) if isinstance(exc, TrainingError) else (
                "out of memory on this job's own model and batch size; make them smaller")
            recorder.fail(rt, job_id, reason, FailureKind.USER)
            return JobStatus.FAILED
        finally:
            writer.close()
        heartbeat.settle()
        return record_end(rt, job_id, outcome, model_epoch=trainer.model_epoch,
                          test_metrics=test, limit=limit)


def record_end(rt: Runtime, job_id: str, outcome: str, *, model_epoch: int,
               test_metrics: dict[str, float], limit: float | None) -> str:
    """Record how a run that raised nothing ended: succeeded, cancelled, timed out, or
    handed back on a shutdown. Returns the outcome, CANCEL when a cancel beat the success.
    A lost lease (another worker owns the job) or a failed write (the job is left to retry)
    records nothing here."""
    if outcome == JobStatus.SUCCEEDED and not recorder.succeed(
            rt, job_id, model_epoch=model_epoch, test_metrics=test_metrics):
        log.info("job %s was cancelled as it finished; its checkpoints are kept", job_id)
        outcome = StopReason.CANCEL
    if outcome == StopReason.CANCEL:
        recorder.cancelled(rt, job_id)
    elif outcome == StopReason.PRUNE:
        recorder.pruned(rt, job_id)
    elif outcome == StopReason.TIME_LIMIT:
        assert limit is not None  # a time limit stops only a job that has one
        recorder.time_out(rt, job_id, limit)
    elif outcome == StopReason.SHUTDOWN:
        recorder.release(rt, job_id)
    elif outcome == StopReason.PREEMPT:
        scheduler.preempted(rt, job_id)
    return outcome
