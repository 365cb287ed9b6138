"""The one place settings come from: the environment (TRAINSERVE_*) and an optional .env."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.example_arrays import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINSERVE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="SQLite file, embedded broker, artifacts")
    database_url: str = Field("", description="SQLAlchemy URL; a SQLite file in data_dir if empty")
    broker_url: str = Field("", description="Celery broker URL; embedded transport if empty")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # Embedded brokers poll: a short interval keeps a job's start latency low, for a little
    # idle work.
    broker_polling_interval: float = Field(0.05, gt=0, le=5)
    # Threads for torch in one worker child; 0 means the cores divided by the concurrency.
    worker_threads: int = Field(0, ge=0, le=256)
    worker_concurrency: int = Field(1, ge=1, le=64)
    # Training processes one job may start on this worker (resources.procs_per_node) on the
    # cpu queue; 0 means the CPUs this process may use. A GPU worker takes its GPU count.
    worker_procs: int = Field(0, ge=0, le=256)
    # The address other workers reach this one at, for a gang's rendezvous when this worker
    # is its node 0 (c10d); empty means this host's name.
    worker_address: str = Field("", max_length=200)
    # Freed memory a worker child keeps for its next batch instead of faulting it in again
    # (workers/allocator.py); 0 leaves malloc's defaults.
    worker_keep_freed_mb: int = Field(1024, ge=0, le=2047)
    # Inference threads in the API process, kept small so training elsewhere never starves it.
    inference_threads: int = Field(1, ge=1, le=64)
    # ...and for a lone request, when the machine has that many cores free right now
    # (app/serving/threads.py); 0 means the CPUs this process may use, at most 4. Set it to
    # inference_threads to keep every forward pass on that many.
    inference_idle_threads: int = Field(0, ge=0, le=64)
    model_cache_size: int = Field(8, ge=1, le=1024)

    lease_seconds: float = Field(30.0, gt=0, description="how long a worker's claim on a job lasts")
    heartbeat_seconds: float = Field(5.0, gt=0, description="how often a worker renews its lease")
    cancel_poll_seconds: float = Field(
        0.25, gt=0, le=60, description="how often a worker reads a running job's cancel flag "
        "(one primary-key SELECT, no write)")
    max_attempts: int = Field(3, ge=1, le=100)
    job_time_limit_seconds: float | None = Field(
        None, gt=0, description="default wall-clock limit of a job; a job's spec may set its own")
    reconcile_seconds: float = Field(5.0, gt=0, description="how often the reconciler looks")
    worker_stop_seconds: float = Field(
        120.0, gt=0, description="how long a stopping worker lets its running jobs checkpoint "
        "and hand themselves back before it ends them (they resume from their last checkpoint)")
    resend_after_seconds: float = Field(
        60.0, gt=0, description="a queued job not taken this long after its send is sent again")
    gang_timeout_seconds: float = Field(
        60.0, gt=0, description="a gang of workers for a `nodes: N` job that has not formed "
        "this long after its first worker joined is released: its workers are freed and the "
        "job, still queued, waits for the next wake-up (no attempt spent)")
    gang_max_restarts: int = Field(
        1, ge=0, le=100, description="times a gang's elastic agents restart its processes "
        "after one of them died before the gang gives up and its job is queued again as a "
        "new gang")
    worker_alive_seconds: float = Field(
        60.0, gt=0, description="a worker seen within this long is alive: GET /v1/workers, "
        "routing of device auto, and the 422 for resources no live worker could satisfy")
    preempt_after_seconds: float = Field(
        30.0, gt=0, description="a queued high or urgent job that no worker took this long "
        "after its submission preempts a running job of lower priority")
    # Text is stored as character ids and images as their arrays, and workers map them
    # rather than load them, so an upload's size bounds neither side's memory.
    max_upload_bytes: int = Field(10 * 1024**3, ge=1)
    # Any other request body (JSON, v2's binary tensors): 413 past this. 16 MiB holds 1,024
    # flattened 28x28 examples as JSON, or 1,024 CIFAR-10 images as v2 binary FP32.
    max_json_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_queued_jobs_per_owner: int = Field(100, ge=1)
    log_level: str = "INFO"

    # Serving. The model cache is bounded by parameter bytes as well as by count.
    model_cache_bytes: int = Field(2 * 1024**3, ge=1, description="parameter bytes kept loaded")
    # Model ids loaded (and run once) at startup, comma-separated: their first request is fast.
    warm_models: Annotated[list[str], NoDecode, BeforeValidator(
        lambda v: [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v)
    ] = Field(default_factory=list)
    # Concurrent predictions to one model run as one forward pass of at most this many...
    batch_max_size: int = Field(32, ge=1, le=1024)
    # ...gathered for at most this long, and only while requests are arriving concurrently:
    # a lone request never waits.
    batch_delay_ms: float = Field(1.0, ge=0, le=50)
    # One character prediction request (v1 `predict`, v2 `infer`) may ask for at most this
    # many characters, and characters x vocabulary (what its forward pass computes) at most
    # this many cells: past either it is a 413, before any work. The defaults take three
    # 10,000-character texts on a 4,000-character vocabulary, and every v1 `predict`.
    max_predict_chars: int = Field(100_000, ge=1)
    max_predict_cells: int = Field(2**27, ge=1)
    # Threads for `generate` (a long sequential loop), apart from the batched predictions.
    generate_threads: int = Field(1, ge=1, le=64)
    # `generate` requests one API key's owner may have queued or running at once (429 past
    # it): long generations from one client cannot queue up ahead of everyone else's.
    max_generate_per_key: int = Field(4, ge=1, le=1024)
    # How long an API key's owner and a (model, owner) lookup are reused without asking the
    # database: a revoked key stops working within this many seconds.
    lookup_cache_seconds: float = Field(2.0, ge=0, le=2)
    # How long an API process reuses what a registry reference (`name@alias`,
    # `name:version`) resolves to: a moved alias is followed by every process within this.
    alias_cache_seconds: float = Field(1.0, ge=0, le=2)
    # Model exports (ONNX, TorchScript, safetensors) this host keeps under data_dir/exports,
    # a cache: each is made once per model and format, the least recently used dropped.
    export_cache_files: int = Field(64, ge=1, le=100_000)
    # Uploaded datasets; max_upload_bytes above bounds the upload itself (413).
    max_dataset_examples: int = Field(
        Limits.max_examples, ge=1, description="examples in one image dataset")
    max_text_chars: int = Field(Limits.max_chars, ge=2,
                                description="characters in one text dataset")
    max_vocab_size: int = Field(Limits.max_vocab, ge=2,
                                description="distinct characters of a text dataset")
    max_dataset_classes: int = Field(Limits.max_classes, ge=2,
                                     description="classes of an image dataset")
    max_decompressed_bytes: int = Field(
        Limits.max_decompressed_bytes, ge=1,
        description="what an upload's gzip and tar may expand to")
    owner_storage_bytes: int = Field(
        20 * 1024**3, ge=1, description="stored bytes of one owner's uploaded datasets, all "
        "together; an upload past it is a 413")
    # A job whose estimated activations for one batch (models/memory.py) pass its device's
    # limit is refused at submit (422) instead of failing, or swapping, on a worker.
    max_activation_bytes_cpu: int = Field(4 * 1024**3, ge=1)
    max_activation_bytes_cuda: int = Field(40 * 1024**3, ge=1)

    # Per API key, on /v1 and /v2: a sustained rate and a burst; 0 turns limiting off.
    rate_limit_per_second: float = Field(200.0, ge=0, le=1e6)
    rate_limit_burst: int = Field(400, ge=1, le=1_000_000)

    # Webhooks (app/webhooks/). A target on a loopback, private, link-local or otherwise
    # non-public address is refused (at registration and at every send) unless this is set:
    # the service must not become a way into its own network.
    webhook_allow_private: bool = False
    webhook_poll_seconds: float = Field(1.0, gt=0, le=60, description="how often each API "
                                        "process looks for deliveries due")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60, description="one attempt's limit")
    # A failed attempt is retried after base * 2**(attempt-1) seconds, at most the cap, until
    # the delivery is this old; then it is marked failed.
    webhook_backoff_seconds: float = Field(10.0, gt=0)
    webhook_backoff_max_seconds: float = Field(3600.0, gt=0)
    webhook_retry_seconds: float = Field(24 * 3600.0, gt=0)
    # The artifact store (core/store.py): a directory (default: artifacts/ in data_dir) or
    # s3://BUCKET/PREFIX; S3 credentials come from the standard AWS_* variables.
    artifact_url: str = Field("", description="a directory, or s3://BUCKET/PREFIX")
    s3_endpoint_url: str = Field("", description="an S3-compatible server; AWS when empty")
    # Each host's verified copies of a bucket's objects, least recently used evicted first.
    cache_dir: Path | None = Field(None, description="default: cache/ in data_dir")
    cache_bytes: int = Field(10 * 1024**3, ge=0)

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'trainserve.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_seconds must be shorter than lease_seconds")
        return self

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def cache_path(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    @property
    def artifacts_on_s3(self) -> bool:
        return self.artifact_url.startswith("s3://")

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
