"""A real trainserve for tests: bench/launcher.py's service, on a fresh database per
backend, with lease and reconciler timings short enough for failure tests to take seconds.

The two backends are the two shapes of a deployment: `sqlite` keeps everything in its data
dir (the artifact store a directory), `postgres` is production's (PostgreSQL, Redis and an
S3 bucket on the suite's own S3 server, tests/integration/s3.py), so every test that
touches artifacts runs against both stores."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import boto3
import psycopg
import pytest
import redis

from bench.launcher import DEFAULT_TIMING, Service, free_port, launch, poll
from tests.integration import s3

PG_ADMIN_URL = os.environ.get("TRAINSERVE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRAINSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_redis_dbs_in_use: set[int] = set()

# Short leases and fast reconciliation so that failure tests finish in seconds.
FAST_SETTINGS = {
    "TRAINSERVE_HEARTBEAT_SECONDS": "0.3",
    "TRAINSERVE_LEASE_SECONDS": "3",
    "TRAINSERVE_RECONCILE_SECONDS": "0.5",
    "TRAINSERVE_RESEND_AFTER_SECONDS": "5",
    # A gang of workers that has not formed this long is released (workers/gang.py).
    "TRAINSERVE_GANG_TIMEOUT_SECONDS": "2",
    "TRAINSERVE_LOG_LEVEL": "INFO",
}


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


def require_postgres() -> None:
    """Skip the test when PostgreSQL is unreachable, or fail it where CI requires it."""
    if postgres_reachable():
        return
    if os.environ.get("TRAINSERVE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail("PostgreSQL unreachable")
    pytest.skip("PostgreSQL unreachable")


def create_database(prefix: str = "trainserve_test") -> tuple[str, Callable[[], None]]:
    """A fresh database on the shared PostgreSQL server: its SQLAlchemy URL, and the
    function that drops it."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", drop


def claim_redis_db() -> tuple[str, Callable[[], None]]:
    """A Redis database of its own for one service, emptied: REDIS_URL's, or the next free
    one below it, and the function that frees it. Services that shared one took each
    other's wake-ups (a worker woken for a job of another service's database finds nothing
    to run, and the job waits for the reconciler's resend), and each new one's flush
    emptied the queues of those still running."""
    base, _, number = REDIS_URL.rpartition("/")
    db = next((n for n in range(int(number or 0), 0, -1) if n not in _redis_dbs_in_use), None)
    if db is None:  # database 0, where Redis's clients go by default, is left alone
        raise RuntimeError(f"every Redis database from {REDIS_URL} down to 1 is in use")
    _redis_dbs_in_use.add(db)
    url = f"{base}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url, lambda: _redis_dbs_in_use.discard(db)


def make_service(backend: str, root: Path, **settings: str) -> tuple[Service, Callable[[], None]]:
    """A migrated service with keys for alice, bob and an admin, its API and one worker.
    `backend` is sqlite, postgres (a fresh database on the shared server, a Redis database
    of its own (claim_redis_db), a fresh bucket on the suite's S3 server) or custom (the
    TRAINSERVE_* `settings` given, e.g. a private database and broker)."""
    env = {**os.environ, **FAST_SETTINGS, "TRAINSERVE_DATA_DIR": str(root / "data")}
    for name in ("DATABASE_URL", "BROKER_URL", "ARTIFACT_URL", "S3_ENDPOINT_URL", "CACHE_DIR"):
        env.pop(f"TRAINSERVE_{name}", None)
    if backend == "postgres":
        endpoint = s3.shared_endpoint()
        env |= {**s3.CREDENTIALS, "TRAINSERVE_S3_ENDPOINT_URL": endpoint,
                "TRAINSERVE_ARTIFACT_URL": s3.new_bucket(endpoint)}
    env.update({f"TRAINSERVE_{key.upper()}": value for key, value in settings.items()})
    cleanups: list[Callable[[], None]] = []
    if backend == "postgres":
        env["TRAINSERVE_DATABASE_URL"], drop = create_database()
        cleanups.append(drop)
        env["TRAINSERVE_BROKER_URL"], free = claim_redis_db()
        cleanups.append(free)
    try:
        service = launch(root, env, backend=backend)
    except BaseException:
        for cleanup in cleanups:
            cleanup()
        raise

    def teardown() -> None:
        service.stop_all()
        for cleanup in cleanups:
            cleanup()
    return service, teardown


def begin_interrupted_write(service: Service, key: str) -> str:
    """What a writer killed mid-object leaves under `key`'s folder: a temporary file in a
    directory store, a multipart upload never completed in a bucket. Returns the key a
    listing could show it under (a bucket shows none)."""
    if not service.on_s3:
        folder, _, name = key.rpartition("/")
        half = f"{folder}/.{name}.999.tmp"
        path = service.artifact(half)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * 100)
        return half
    bucket, _, prefix = service.env["TRAINSERVE_ARTIFACT_URL"].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=service.env["TRAINSERVE_S3_ENDPOINT_URL"])
    name = f"{prefix}/{key}.half"
    upload = client.create_multipart_upload(Bucket=bucket, Key=name)
    client.upload_part(Bucket=bucket, Key=name, UploadId=upload["UploadId"], PartNumber=1,
                       Body=b"\x00" * 100)
    return f"{key}.half"


__all__ = [
    "DEFAULT_TIMING",
    "FAST_SETTINGS",
    "Service",
    "begin_interrupted_write",
    "create_database",
    "free_port",
    "make_service",
    "poll",
    "postgres_reachable",
    "redis_reachable",
    "require_postgres",
]
