"""A throwaway database per backend for unit tests that speak SQL: a SQLite file, or a fresh
database on the shared PostgreSQL server (dropped afterwards). PostgreSQL missing skips the
test, or fails it when TRAINSERVE_TEST_REQUIRE_SERVICES=1 (as CI sets)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command

import migrations
from core.db.migrate import alembic_config
from core.db.tables import Base
from tests.integration.service import create_database, require_postgres

BACKENDS = ["sqlite", "postgres"]


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    require_postgres()
    url, drop = create_database("trainserve_unit")
    try:
        yield url
    finally:
        drop()


@contextmanager
def tables_engine(backend: str, tmp_path: Path) -> Iterator[sa.Engine]:
    """A throwaway database with today's tables (made from the ORM, not migrated) for tests
    of concurrent claims: no pool, so every thread opens its own connection, and SQLite
    waits up to 30 s for the write lock instead of failing at once."""
    with database_url(backend, tmp_path) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                  connect_args={"timeout": 30} if backend == "sqlite" else {})
        Base.metadata.create_all(engine)
        try:
            yield engine
        finally:
            engine.dispose()


MIGRATIONS = Path(migrations.__file__).parent


@contextmanager
def engine_for(backend: str, tmp_path: Path) -> Iterator[sa.Engine]:
    with database_url(backend, tmp_path) as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            yield engine
        finally:
            engine.dispose()


def migrate(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    """Upgrade (or downgrade) the database to `revision`, as `trainserve db upgrade` does."""
    config = alembic_config(MIGRATIONS)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)
