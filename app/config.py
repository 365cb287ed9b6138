"""The one place settings come from: the environment (TRAINSERVE_*) and an optional .env."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINSERVE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="SQLite file, embedded broker, artifacts")
    database_url: str = Field("", description="SQLAlchemy URL; a SQLite file in data_dir if empty")
    broker_url: str = Field("", description="Celery broker URL; embedded transport if empty")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # Embedded brokers poll; 50 ms keeps a job's start latency near 100 ms.
    broker_polling_interval: float = Field(0.05, gt=0, le=5)
    # Threads for torch in one worker child; 0 means the cores divided by the concurrency.
    worker_threads: int = Field(0, ge=0, le=256)
    worker_concurrency: int = Field(1, ge=1, le=64)
    # Inference threads in the API process, kept small so training elsewhere never starves it.
    inference_threads: int = Field(1, ge=1, le=64)
    model_cache_size: int = Field(8, ge=1, le=1024)

    lease_seconds: float = Field(30.0, gt=0, description="how long a worker's claim on a job lasts")
    heartbeat_seconds: float = Field(5.0, gt=0, description="how often a worker renews its lease")
    max_attempts: int = Field(3, ge=1, le=100)
    job_time_limit_seconds: float | None = Field(
        None, gt=0, description="default wall-clock limit of a job; a job's spec may set its own")
    reconcile_seconds: float = Field(5.0, gt=0, description="how often the reconciler looks")
    resend_after_seconds: float = Field(
        60.0, gt=0, description="a queued job not taken this long after its send is sent again")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1)
    max_queued_jobs_per_owner: int = Field(100, ge=1)
    log_level: str = "INFO"

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
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
