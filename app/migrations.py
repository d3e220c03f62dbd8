"""Run the Alembic migrations from code (msgsync migrate, start-up on SQLite, tests)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic.config import Config

from alembic import command

__all__ = ["alembic_config", "downgrade_to_base", "scripts_dir", "upgrade_to_head"]


def scripts_dir() -> Path:
    """Where the migration scripts are: inside the installed package (the wheel maps the
    repository's alembic/ to app/alembic), else in the source checkout beside app/."""
    packaged = files("app").joinpath("alembic")
    if packaged.is_dir():
        # A wheel installs as plain files, so the resource is a real directory.
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "alembic"
    if not (checkout / "env.py").is_file():
        raise RuntimeError(f"msgsync's migration scripts are missing (looked in {packaged})")
    return checkout


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking (Alembic runs its own event loop): call it from a thread inside the server."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
