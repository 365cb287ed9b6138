"""GPU code paths that run without a GPU: device selection, routing, autocast staying off.

CUDA's presence is faked by monkeypatching torch.cuda: selection only asks whether CUDA is
there and never touches a device, so the answers are the ones a GPU machine would get.
"""

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import torch
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from app.jobs.service import _queue_for
from core.db.tables import Base, WorkerSeen, utcnow
from models.data import load_builtin
from models.spec import JobSpec
from workers import devices
from workers.faults import TrainingError
from workers.runner import device_for
from workers.trainer import Trainer


def _spec(device: str = "auto", **training: Any) -> JobSpec:
    return JobSpec.model_validate({
        "dataset": "builtin:digits", "model": {"arch": "mlp", "hidden_sizes": [16]},
        "training": {"epochs": 1, "batch_size": 256, **training}, "device": device})


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose driver reports CUDA (one GPU visible)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices._warn_if_shared.cache_clear()
    yield
    devices._warn_if_shared.cache_clear()


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# -- which device a worker trains on ------------------------------------------------------

@pytest.mark.usefixtures("cuda")
@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_gpu_queue_trains_on_the_workers_gpu(requested: str) -> None:
    # CUDA_VISIBLE_DEVICES leaves the worker one GPU, which is index 0 in its process.
    assert device_for(_spec(requested), "gpu") == torch.device("cuda", 0)


@pytest.mark.usefixtures("cuda")
def test_cpu_queue_and_cpu_jobs_never_touch_the_gpu() -> None:
    for requested in ("auto", "cpu", "cuda"):
        assert device_for(_spec(requested), "cpu") == torch.device("cpu")
    assert device_for(_spec("cpu"), "gpu") == torch.device("cpu")


@pytest.mark.usefixtures("no_cuda")
def test_a_cuda_job_on_a_worker_without_cuda_fails_with_a_reason() -> None:
    with pytest.raises(TrainingError, match="no usable CUDA device"):
        device_for(_spec("cuda"), "gpu")


@pytest.mark.usefixtures("no_cuda")
def test_an_auto_job_on_a_gpu_worker_without_cuda_falls_back_to_cpu(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="workers.devices"):
        assert device_for(_spec("auto"), "gpu") == torch.device("cpu")
    assert "without CUDA" in caplog.text


@pytest.mark.usefixtures("cuda")
def test_several_visible_gpus_are_warned_about_once(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with caplog.at_level(logging.WARNING, logger="workers.devices"):
        for _ in range(3):
            assert device_for(_spec(), "gpu") == torch.device("cuda", 0)
    assert caplog.text.count("4 GPUs are visible") == 1
    assert "CUDA_VISIBLE_DEVICES" in caplog.text


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert devices.visible_gpus() == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.visible_gpus() is None


# -- where the API routes a job -----------------------------------------------------------

@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _seen(session: Session, name: str, queue: str, device: str, ago: float) -> None:
    session.add(WorkerSeen(name=name, queue=queue, device=device,
                           last_seen=utcnow() - timedelta(seconds=ago)))
    session.commit()


def test_routing_without_a_gpu_worker(session: Session) -> None:
    _seen(session, "box:1/cpu", "cpu", "cpu", ago=1)
    assert _queue_for(session, _spec("auto")) == "cpu"
    assert _queue_for(session, _spec("cpu")) == "cpu"
    # An explicit cuda job waits on the gpu queue for a GPU worker rather than train on CPU.
    assert _queue_for(session, _spec("cuda")) == "gpu"


def test_auto_goes_to_the_gpu_only_while_a_gpu_worker_is_fresh(session: Session) -> None:
    _seen(session, "gpu-box:1/gpu", "gpu", "cuda", ago=600)  # stopped ten minutes ago
    assert _queue_for(session, _spec("auto")) == "cpu"
    _seen(session, "gpu-box:2/gpu", "gpu", "cuda", ago=2)
    assert _queue_for(session, _spec("auto")) == "gpu"
    assert _queue_for(session, _spec("cpu")) == "cpu"


def test_a_gpu_queue_worker_without_cuda_does_not_attract_auto_jobs(session: Session) -> None:
    # Its reconciler records device 'cpu' (celery_app asks torch.cuda.is_available()).
    _seen(session, "misconfigured:1/gpu", "gpu", "cpu", ago=1)
    assert _queue_for(session, _spec("auto")) == "cpu"


# -- bf16 autocast ------------------------------------------------------------------------

def test_mixed_precision_is_off_unless_asked_for() -> None:
    assert _spec().training.mixed_precision == "off"
    assert _spec(mixed_precision="bf16").training.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="mixed_precision"):
        _spec(mixed_precision="fp16")


@pytest.mark.parametrize("mixed_precision", ["off", "bf16"])
def test_autocast_stays_off_on_cpu(mixed_precision: str) -> None:
    spec = _spec(mixed_precision=mixed_precision)
    trainer = Trainer(spec, load_builtin("digits"), torch.device("cpu"))
    assert trainer.autocast is False
    dtypes: list[torch.dtype] = []
    trainer.model.register_forward_hook(lambda _m, _i, out: dtypes.append(out[0].dtype))

    class NeverStop:
        def stop_reason(self) -> str | None:
            return None

    assert trainer.train_one_epoch(1, NeverStop()) is not None  # type: ignore[arg-type]
    assert dtypes and set(dtypes) == {torch.float32}  # the forward ran in fp32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_data_is_moved_to_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The training set goes to the device when the trainer is built; batches are index views
    # of it. An epoch copies only its shuffled order from the host, so pinned host memory
    # would speed up nothing.
    trainer = Trainer(_spec(batch_size=16), load_builtin("digits"), torch.device("cpu"))
    copies: list[object] = []
    real_to = torch.Tensor.to

    def counting_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        copies.append(args or kwargs)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)

    class NeverStop:
        def stop_reason(self) -> str | None:
            return None

    assert trainer.train_one_epoch(1, NeverStop()) is not None  # type: ignore[arg-type]
    assert len(trainer.train_set) // 16 > 80  # many batches ...
    assert len(copies) <= 1, copies  # ... and at most one copy to the device
