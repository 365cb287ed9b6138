"""The job spec: what to build, on what data, and how to train it.

Validated once by the API with bounds on every number and enums for every name, stored with
its defaults filled in, and read back by the trainer. Unknown fields are errors so that a
typo never silently trains the wrong thing.
"""

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.store import ID

MAX_PARAMETERS = 50_000_000
METRIC_NAME = r"^(train|val)_(loss|accuracy|bpc)$"
# The metrics a job can watch (plateau schedule, early stopping), by the kind of model: every
# model records its loss and accuracy, character models their bits per character too. The
# val_ ones exist only where the job has a validation split.
CLASSIFIER_METRICS = frozenset({"train_loss", "train_accuracy", "val_loss", "val_accuracy"})
CHARACTER_METRICS = CLASSIFIER_METRICS | {"train_bpc", "val_bpc"}
Width = Annotated[int, Field(ge=1, le=8192)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Activation(StrEnum):
    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    gelu = "gelu"


class MLPSpec(Strict):
    arch: Literal["mlp"]
    hidden_sizes: list[Width] = Field(default=[1000, 1000], max_length=16)
    activation: Activation = Activation.relu
    dropout: float = Field(0.0, ge=0, lt=1)


class CNNSpec(Strict):
    arch: Literal["cnn"]
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default=[32, 64], min_length=1, max_length=8)
    kernel_size: int = Field(3, ge=1, le=11)
    pool: Literal["max", "avg", "none"] = "max"
    hidden_sizes: list[Width] = Field(default=[128], max_length=8)
    activation: Activation = Activation.relu
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False


class RecurrentSpec(Strict):
    arch: Literal["rnn", "gru", "lstm"]
    hidden_size: int = Field(128, ge=1, le=4096)
    num_layers: int = Field(1, ge=1, le=8)
    embedding_dim: int | None = Field(None, ge=1, le=4096,
                                      description="one-hot input when absent")
    dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers")
    activation: Literal["tanh", "relu"] = Field("tanh", description="rnn only")

    @model_validator(mode="after")
    def _activation_only_for_rnn(self) -> "RecurrentSpec":
        if self.arch != "rnn" and self.activation != "tanh":
            raise ValueError(f"activation is fixed for {self.arch}; only rnn takes 'relu'")
        return self


ModelSpec = Annotated[MLPSpec | CNNSpec | RecurrentSpec, Field(discriminator="arch")]
Lr = Annotated[float, Field(gt=0, le=100)]
Decay = Annotated[float, Field(ge=0, le=1)]


class AdadeltaSpec(Strict):
    """Zeiler's rule exactly as the seed wrote it; defaults are the seed's lr, rho and eps."""

    name: Literal["adadelta"]
    lr: Lr = 0.1
    rho: float = Field(0.95, gt=0, lt=1)
    eps: float = Field(1e-5, gt=0, le=1)
    weight_decay: Decay = 0.0


class AdagradSpec(Strict):
    name: Literal["adagrad"]
    lr: Lr = 0.01
    lr_decay: float = Field(0.0, ge=0, le=1)
    eps: float = Field(1e-10, gt=0, le=1)
    weight_decay: Decay = 0.0


class AdamSpec(Strict):
    name: Literal["adam", "adamw"]
    lr: Lr = 0.001
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    weight_decay: Decay | None = Field(None, description="0 for adam, 0.01 for adamw if absent")

    @model_validator(mode="after")
    def _default_decay(self) -> "AdamSpec":
        if self.weight_decay is None:
            self.weight_decay = 0.01 if self.name == "adamw" else 0.0
        return self


class SGDSpec(Strict):
    name: Literal["sgd"]
    lr: Lr = 0.01
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Decay = 0.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDSpec":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        return self


class RMSpropSpec(Strict):
    name: Literal["rmsprop"]
    lr: Lr = 0.01
    alpha: float = Field(0.99, gt=0, lt=1)
    eps: float = Field(1e-8, gt=0, le=1)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: Decay = 0.0


OptimizerSpec = Annotated[
    AdadeltaSpec | AdagradSpec | AdamSpec | SGDSpec | RMSpropSpec, Field(discriminator="name")]


class StepSchedule(Strict):
    name: Literal["step"]
    step_size: int = Field(10, ge=1, le=100_000, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1)


class CosineSchedule(Strict):
    name: Literal["cosine"]
    t_max: int | None = Field(None, ge=1, le=100_000, description="the run's epochs if absent")
    eta_min: float = Field(0.0, ge=0, le=100)


class PlateauSchedule(Strict):
    name: Literal["plateau"]
    metric: str = Field("val_loss", pattern=METRIC_NAME)
    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(5, ge=0, le=10_000)


ScheduleSpec = Annotated[StepSchedule | CosineSchedule | PlateauSchedule,
                         Field(discriminator="name")]


class EarlyStopping(Strict):
    metric: str = Field("val_loss", pattern=METRIC_NAME,
                        description="lower is better for losses, higher for accuracies")
    patience: int = Field(5, ge=1, le=10_000, description="epochs without improvement")
    min_delta: float = Field(0.0, ge=0, le=1e6)


def higher_is_better(metric: str) -> bool:
    return metric.endswith("accuracy")


def watched_metrics(training: "TrainingSpec") -> dict[str, str]:
    """The metrics a job's training watches, by the field that names each."""
    watched = {}
    if isinstance(training.lr_schedule, PlateauSchedule):
        watched["training.lr_schedule.metric"] = training.lr_schedule.metric
    if training.early_stopping is not None:
        watched["training.early_stopping.metric"] = training.early_stopping.metric
    return watched


MAX_STEPS = 100_000_000
DEFAULT_EPOCHS = 10


class TrainingSpec(Strict):
    epochs: int | None = Field(None, ge=1, le=100_000, description="passes over the "
                               "training split, 10 if absent; give epochs or max_steps, not "
                               "both (with max_steps it stays null)")
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="train for this many batches instead of whole "
        "epochs (for corpora too large to pass over): metric rows then carry `step` and a "
        "fractional `epoch`, and schedules, early stopping and checkpoint_every count "
        "evaluations instead of epochs")
    eval_every: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="with max_steps: steps between metric rows "
        "(each evaluates the validation split); a tenth of max_steps if absent, and always "
        "one at max_steps")
    eval_batches: int | None = Field(
        None, ge=1, le=1_000_000, description="validation batches (of 1,024 examples or "
        "windows) per evaluation, the same evenly spaced ones each time; the whole "
        "validation split if absent")
    batch_size: int = Field(64, ge=1, le=65_536)
    l2: float = Field(0.0, ge=0, le=10, description="the seed's reg * sum(W**2) over weight "
                      "matrices, added to the loss; distinct from optimizer weight decay")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    validation_fraction: float | None = Field(
        None, ge=0, le=0.5, description="held-out share; the dataset's fixed split if absent")
    seq_len: int = Field(64, ge=1, le=4096, description="characters per training window")
    grad_clip: float | None = Field(None, gt=0, le=1e6, description="max gradient norm")
    checkpoint_every: int | None = Field(
        None, ge=1, le=100_000, description="epochs (with max_steps: evaluations) between "
        "checkpoints; if absent, one after each minute of training, and always one at the end")
    keep_checkpoints: int = Field(3, ge=1, le=100, description="latest checkpoints kept, "
                                  "besides the best one")
    lr_schedule: ScheduleSpec | None = Field(
        None, description="stepped once per epoch (with max_steps: per evaluation)")
    early_stopping: EarlyStopping | None = Field(
        None, description="stop when the metric stops improving; the model is then the best "
        "checkpoint instead of the last")
    time_limit_seconds: float | None = Field(
        None, gt=0, le=30 * 86400, description="wall-clock limit; the job fails past it, its "
        "checkpoints kept")
    mixed_precision: Literal["off", "bf16"] = Field(
        "off", description="bf16: forward and loss under bf16 autocast on a GPU (weights and "
        "optimizer stay fp32); ignored on CPU")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "TrainingSpec":
        if self.max_steps is None:
            if self.eval_every is not None:
                raise ValueError("eval_every counts steps: it needs max_steps")
            self.epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
            return self
        if self.epochs is not None:
            raise ValueError("give epochs or max_steps, not both")
        if self.eval_every is None:
            self.eval_every = -(-self.max_steps // 10)
        elif self.eval_every > self.max_steps:
            raise ValueError(f"eval_every ({self.eval_every:,}) is more than max_steps "
                             f"({self.max_steps:,})")
        return self

    @property
    def rounds(self) -> int:
        """Metric rows of a whole run: its epochs, or its evaluations with max_steps."""
        if self.max_steps is None:
            assert self.epochs is not None
            return self.epochs
        assert self.eval_every is not None
        return -(-self.max_steps // self.eval_every)

    @property
    def progress_total(self) -> int:
        """What progress counts to: epochs, or steps with max_steps."""
        return self.rounds if self.max_steps is None else self.max_steps


MAX_NODES = 16
MAX_PROCS_PER_NODE = 16


class ResourcesSpec(Strict):
    """Data-parallel width: the job runs as nodes x procs_per_node ranks of torch.distributed
    (gloo on CPU, NCCL on GPU), each training on its share of every global batch, so the
    result is the 1-process one up to floating-point reduction order."""

    nodes: int = Field(1, ge=1, le=MAX_NODES, description="workers (hosts) the job spans; "
                       "it starts once that many workers of its queue have claimed it")
    procs_per_node: int = Field(
        1, ge=1, le=MAX_PROCS_PER_NODE, description="training processes on each node: one "
        "per GPU on a GPU worker (NCCL), else that many CPU processes (gloo)")

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


DATASET_REF = re.compile(rf"builtin:[a-z0-9][a-z0-9-]{{0,40}}|{ID.pattern}")


class JobSpec(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    dataset: str = Field(description="builtin:NAME or an uploaded dataset's id",
                         examples=["builtin:hihello"])
    model: ModelSpec
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamSpec(name="adam"))
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_from: str | None = Field(None, description="a job id: start from the weights of the "
                                  "model it produced (same architecture and data shape)")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="data-parallel training across processes "
        "and workers; training.batch_size stays the global batch, split across the ranks",
        examples=[{"nodes": 1, "procs_per_node": 2}])
    priority: Literal["low", "normal", "high", "urgent"] = Field(
        "normal", description="which queued job a free worker takes first (then the owner "
        "with the fewest running jobs, then the oldest); `high` and `urgent` jobs that wait "
        "preempt running jobs of lower priority; `urgent` is for admin keys (403 otherwise)")
    preemptible: bool = Field(True, description="whether a waiting higher-priority job may "
                              "preempt this one (it checkpoints and resumes later, exactly); "
                              "false is for admin keys (403 otherwise)")

    @field_validator("init_from")
    @classmethod
    def _job_ref(cls, value: str | None) -> str | None:
        if value is not None and not ID.fullmatch(value):
            raise ValueError("must be a job id")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset_ref(cls, value: str) -> str:
        if not DATASET_REF.fullmatch(value):
            raise ValueError("must be builtin:NAME or a dataset id")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> "JobSpec":
        if self.name is None:
            self.name = f"{self.model.arch}-{self.dataset.removeprefix('builtin:')}"
        return self
