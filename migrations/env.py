"""Alembic environment: the URL comes from Settings, the target from core.db.tables."""

from alembic import context
from sqlalchemy import Connection

from core.config import get_settings
from core.db.engine import make_engine
from core.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    # Batch mode lets ALTER TABLE work on SQLite, which cannot alter most columns in place.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(get_settings())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `trainserve db upgrade`")
run_migrations_online()
