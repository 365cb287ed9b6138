"""PostgreSQL and Redis servers of a test's own, so that it can stop and restart them
without disturbing anything else on the machine."""

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.integration.service import free_port, poll

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/nonexistent"))


@dataclass
class PrivateRedis:
    port: int
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence, like the machine's own Redis: a restart drops every message.
        extra = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *extra], stdout=subprocess.DEVNULL)
        poll(self._up, timeout=20, what="redis to start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def _up(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, password=self.password,
                                    socket_timeout=1).ping())
        except redis.RedisError:
            return False


@dataclass
class PrivatePostgres:
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["su", "postgres", "-c", " ".join(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-w", *args])],
            check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-o", f"'-p {self.port} -k {self.folder}'", "-l",
                  str(self.folder / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def up(self) -> bool:
        try:
            psycopg.connect(self.url.replace("+psycopg", ""), connect_timeout=1).close()
        except psycopg.Error:
            return False
        return True


@contextmanager
def private_redis(password: str | None = None) -> Iterator[PrivateRedis]:
    server = PrivateRedis(port=free_port(), password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    folder = Path(tempfile.mkdtemp(prefix="trainserve-pg-"))
    shutil.chown(folder, "postgres")
    server = PrivatePostgres(port=free_port(), folder=folder)
    subprocess.run(["su", "postgres", "-c", f"{PG_BIN / 'initdb'} -D {folder / 'data'} "
                    "-A trust -U postgres --no-sync"], check=True, capture_output=True,
                   timeout=120)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
