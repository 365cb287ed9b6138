"""Apply Alembic migrations. The caller names where they live (the `migrations` package), so
that the core never imports the migrations, which import the core's tables."""

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(script_location: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return config


def upgrade(script_location: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location), revision)
