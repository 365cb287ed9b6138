"""Apply the Alembic migrations that ship inside the package."""

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)
