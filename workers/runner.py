"""One delivery of one job: lease it, load its data, train or resume it, record the end."""

import logging
import re
from typing import Any

import torch

from models import checkpoint as ckpt
from models.data import BUILTINS, ImageData, TextData, load_builtin
from models.spec import JobSpec
from workers import lease, recorder
from workers.recorder import LeaseLost
from workers.runtime import Runtime
from workers.trainer import Trainer, TrainingError
from workers.writer import BackgroundWriter

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"[0-9a-f]{28}")


class Hooks:
    """The trainer's reports, recorded off the training thread in order."""

    def __init__(self, rt: Runtime, job_id: str, heartbeat: lease.Heartbeat,
                 writer: BackgroundWriter) -> None:
        self._rt, self._job_id = rt, job_id
        self._heartbeat, self._writer = heartbeat, writer

    def stop_reason(self) -> str | None:
        if self._writer.error is not None:
            return "write_failed"
        return self._heartbeat.reason

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._writer.submit(recorder.record_epoch, self._rt, self._job_id, epoch, metrics)

    def on_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
        # Encoded here: the tensors are live weights that the next batch will change.
        data = ckpt.encode(tensors, meta)
        self._writer.submit(recorder.record_checkpoint, self._rt, self._job_id, epoch, data,
                            meta)


def device_for(spec: JobSpec, queue: str) -> torch.device:
    if queue == "gpu" and spec.device != "cpu":
        if not torch.cuda.is_available():
            raise RuntimeError("a gpu-queue job reached a worker without CUDA")
        return torch.device("cuda")
    return torch.device("cpu")


def load_data(spec: JobSpec) -> ImageData | TextData:
    name = spec.dataset.removeprefix("builtin:")
    if spec.dataset.startswith("builtin:") and name in BUILTINS:
        return load_builtin(name, spec.training.validation_fraction)
    raise TrainingError(f"dataset {spec.dataset} is not available to this worker")


def run_job(rt: Runtime, job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        log.warning("ignored a message with a malformed job id")
        return "ignored"
    claimed = lease.claim(rt, job_id)
    if claimed is None:
        log.info("job %s is taken, finished or cancelled; nothing to do", job_id)
        return "skipped"
    if claimed.attempts > rt.settings.max_attempts:
        recorder.finish(rt, job_id, "failed", f"gave up after {claimed.attempts - 1} attempts; "
                        "the worker running it stopped each time")
        return "failed"
    spec = JobSpec.model_validate(claimed.spec)
    with lease.Heartbeat(rt, job_id) as heartbeat:
        writer = BackgroundWriter()
        try:
            device = device_for(spec, claimed.queue)
            trainer = Trainer(spec, load_data(spec), device)
            resume = recorder.prepare_resume(rt, job_id, str(device))
            if resume is not None:
                log.info("job %s resumes after epoch %d", job_id, resume.epoch)
                trainer.restore(resume)
            outcome = trainer.run(Hooks(rt, job_id, heartbeat, writer))
            writer.flush()
        except LeaseLost:
            log.warning("job %s: lease lost, another worker owns it now", job_id)
            return "lease_lost"
        except TrainingError as exc:
            writer.flush()
            recorder.finish(rt, job_id, "failed", str(exc))
            return "failed"
        finally:
            writer.close()
        if outcome == "succeeded":
            recorder.succeed(rt, job_id)
        elif outcome == "cancel":
            recorder.finish(rt, job_id, "cancelled")
        elif outcome == "shutdown":
            recorder.release(rt, job_id)
        return outcome
