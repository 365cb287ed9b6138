"""A real trainserve for tests: migrated database, API and worker as subprocesses."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import sqlalchemy
import sqlalchemy.pool

from core.config import Settings

PG_ADMIN_URL = os.environ.get("TRAINSERVE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRAINSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# Short leases and fast reconciliation so that failure tests finish in seconds.
FAST_SETTINGS = {
    "TRAINSERVE_HEARTBEAT_SECONDS": "0.3",
    "TRAINSERVE_LEASE_SECONDS": "3",
    "TRAINSERVE_RECONCILE_SECONDS": "0.5",
    "TRAINSERVE_RESEND_AFTER_SECONDS": "5",
    "TRAINSERVE_LOG_LEVEL": "INFO",
}
# Benchmarks measure what a deployment gets: the defaults, not the tests' busy heartbeats
# and reconciler, which on two cores take CPU from the training being timed.
DEFAULT_TIMING = {name: str(Settings.model_fields[name].default) for name in (
    "heartbeat_seconds", "lease_seconds", "reconcile_seconds", "resend_after_seconds")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(check: Callable[[], Any], *, timeout: float, interval: float = 0.05,
         what: str = "condition") -> Any:
    """Call `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def postgres_reachable() -> bool:
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


@dataclass
class Service:
    backend: str
    root: Path
    env: dict[str, str]
    base_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=self.env,
                              capture_output=True, text=True, check=check, timeout=120)

    def start_api(self) -> None:
        self.processes["api"] = self._spawn("api", [sys.executable, "-m", "app.cli", "api"])

    def start_worker(self, name: str = "worker", pool: str = "prefork") -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "app.cli", "worker", "--queues", "cpu", "--pool", pool]
        self.processes[name] = self._spawn(name, argv)
        return self.processes[name]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def client(self, key: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited: {self.log(name)[-3000:]}")
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        poll(ready, timeout=timeout, interval=0.1, what="the API to be ready")

    @property
    def database_url(self) -> str:
        return self.env.get("TRAINSERVE_DATABASE_URL") or (
            f"sqlite:///{self.env['TRAINSERVE_DATA_DIR']}/trainserve.db")

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Read or change the service's database behind its back, as a fault would."""
        engine = sqlalchemy.create_engine(self.database_url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sqlalchemy.text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()

    def artifact(self, relative: str) -> Path:
        return Path(self.env["TRAINSERVE_DATA_DIR"]) / "artifacts" / relative

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_job(self, client: httpx.Client, job_id: str, statuses: tuple[str, ...] = (
            "succeeded", "failed", "cancelled"), timeout: float = 120,
                 interval: float = 0.1) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in statuses else None
        return poll(done, timeout=timeout, interval=interval,
                    what=f"job {job_id} to be {statuses}")


def make_service(backend: str, root: Path, **settings: str) -> tuple[Service, Callable[[], None]]:
    """A migrated service with keys for alice, bob and an admin, its API and one worker.
    `backend` is sqlite, postgres (a fresh database on the shared server, Redis db 15) or
    custom (the TRAINSERVE_* `settings` given, e.g. a private database and broker)."""
    env = {**os.environ, **FAST_SETTINGS, "TRAINSERVE_DATA_DIR": str(root / "data"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("TRAINSERVE_DATABASE_URL", None)
    env.pop("TRAINSERVE_BROKER_URL", None)
    env.update({f"TRAINSERVE_{key.upper()}": value for key, value in settings.items()})
    cleanups: list[Callable[[], None]] = []
    if backend == "postgres":
        name = f"trainserve_test_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cleanups.append(drop)
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        env["TRAINSERVE_DATABASE_URL"] = f"{base}/{name}"
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["TRAINSERVE_BROKER_URL"] = REDIS_URL
    port = free_port()
    env["TRAINSERVE_PORT"] = str(port)
    service = Service(backend=backend, root=root, env=env, base_url=f"http://127.0.0.1:{port}")
    service.cli("db", "upgrade")
    for owner in ("alice", "bob"):
        service.keys[owner] = service.cli("keys", "create", owner).stdout.strip()
    service.keys["admin"] = service.cli("keys", "create", "root", "--admin").stdout.strip()
    service.start_api()
    service.start_worker()
    service.wait_ready()

    def teardown() -> None:
        for name in list(service.processes):
            service.stop(name)
        for cleanup in cleanups:
            cleanup()
    return service, teardown
