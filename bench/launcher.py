"""Launch a real trainserve (migrated database, API and worker as subprocesses) on one
machine: what the benchmarks measure and what the integration tests drive. It knows nothing
of tests: the test harness (tests/integration/service.py) adds fresh PostgreSQL databases,
fast lease timings and its reachability checks on top.
"""

import os
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
import sqlalchemy
import sqlalchemy.pool

from core.config import Settings
from core.lifecycle import TERMINAL
from core.store import Store, open_store

# The defaults a deployment runs with, as settings to pass back explicitly (for runs that
# must measure what a deployment gets whatever the caller's environment says).
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


@dataclass
class Service:
    backend: str
    root: Path
    env: dict[str, str]
    base_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _store: Store | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=self.env,
                              capture_output=True, text=True, check=check, timeout=120)

    def start_api(self) -> None:
        self.processes["api"] = self._spawn("api", [sys.executable, "-m", "app.cli", "api"])

    def start_worker(self, name: str = "worker", pool: str = "prefork", queues: str = "cpu",
                     **settings: str) -> subprocess.Popen[bytes]:
        """A worker; `settings` (TRAINSERVE_* without the prefix, e.g. data_dir) are its
        own, as on another host."""
        argv = [sys.executable, "-m", "app.cli", "worker", "--queues", queues, "--pool", pool]
        env = self.env | {f"TRAINSERVE_{k.upper()}": v for k, v in settings.items()}
        self.processes[name] = self._spawn(name, argv, env)
        return self.processes[name]

    def _spawn(self, name: str, argv: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
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

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

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
        """A file of the default directory store (see `store` for either kind)."""
        return Path(self.env["TRAINSERVE_DATA_DIR"]) / "artifacts" / relative

    @property
    def on_s3(self) -> bool:
        return self.env.get("TRAINSERVE_ARTIFACT_URL", "").startswith("s3://")

    @property
    def store(self) -> Store:
        """The service's artifact store as its processes open it, with a cache of its own:
        what an outside observer (or a fault) sees and changes."""
        if self._store is None:
            self._store = open_store(Settings(
                data_dir=Path(self.env["TRAINSERVE_DATA_DIR"]),
                artifact_url=self.env.get("TRAINSERVE_ARTIFACT_URL", ""),
                s3_endpoint_url=self.env.get("TRAINSERVE_S3_ENDPOINT_URL", ""),
                cache_dir=self.root / "observer-cache"))
        return self._store

    def object_keys(self, prefix: str = "") -> list[str]:
        return sorted(stored.key for stored in self.store.list(prefix))

    def read_object(self, key: str) -> bytes:
        local = self.store.backend.local(key)
        if local is not None:
            return local.read_bytes()
        tmp = self.root / f"download-{os.getpid()}.tmp"
        try:
            self.store.backend.download(key, tmp)
            return tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)

    def write_object(self, key: str, data: bytes) -> None:
        """Replace (or create) an object behind the service's back, as a fault would."""
        self.store.put_bytes(key, data)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_job(self, client: httpx.Client, job_id: str,
                 statuses: tuple[str, ...] = tuple(TERMINAL), timeout: float = 120,
                 interval: float = 0.1) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in statuses else None
        return poll(done, timeout=timeout, interval=interval,
                    what=f"job {job_id} to be {statuses}")


def launch(root: Path, env: dict[str, str], *, backend: str = "sqlite",
           owners: tuple[str, ...] = ("alice", "bob")) -> Service:
    """Migrate, make a key per owner (and one admin key, `admin`), start the API and one
    worker with `env`, and wait until the API is ready. `env` is the processes' whole
    environment; its TRAINSERVE_DATA_DIR (and database and broker, if set) are used."""
    port = free_port()
    env = {**env, "TRAINSERVE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    service = Service(backend=backend, root=root, env=env, base_url=f"http://127.0.0.1:{port}")
    service.cli("db", "upgrade")
    for owner in owners:
        service.keys[owner] = service.cli("keys", "create", owner).stdout.strip()
    service.keys["admin"] = service.cli("keys", "create", "root", "--admin").stdout.strip()
    service.start_api()
    service.start_worker()
    try:
        service.wait_ready()
    except BaseException:
        service.stop_all()
        raise
    return service


def launch_local(root: Path, **settings: str) -> tuple[Service, Callable[[], None]]:
    """A service on the embedded defaults (SQLite, the filesystem broker) under `root`,
    with `settings` as TRAINSERVE_* overrides; returns it and its teardown."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TRAINSERVE_DATABASE_URL", "TRAINSERVE_BROKER_URL")}
    env["TRAINSERVE_DATA_DIR"] = str(root / "data")
    env.update({f"TRAINSERVE_{key.upper()}": value for key, value in settings.items()})
    service = launch(root, env)
    return service, service.stop_all
