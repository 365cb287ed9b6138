"""A throwaway database per backend for unit tests that speak SQL: a SQLite file, or a fresh
database on the shared PostgreSQL server (dropped afterwards). PostgreSQL missing skips the
test, or fails it when TRAINSERVE_TEST_REQUIRE_SERVICES=1 (as CI sets)."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.integration.service import PG_ADMIN_URL, postgres_reachable

BACKENDS = ["sqlite", "postgres"]


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not postgres_reachable():
        if os.environ.get("TRAINSERVE_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL unreachable")
        pytest.skip("PostgreSQL unreachable")
    name = f"trainserve_unit_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
