"""Run the Alembic migrations from code (msgsync migrate, start-up on SQLite, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

__all__ = ["Upgrade", "alembic_config", "downgrade_to_base", "scripts_dir", "upgrade_to_head"]


def scripts_dir() -> Path:
    """Where the migration scripts are: inside the installed package (the wheel maps the
    repository's alembic/ to app/alembic), else in the source checkout beside app/."""
    packaged = files("app").joinpath("alembic")
    if packaged.is_dir():
        # A wheel installs as plain files, so the resource is a real directory.
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "alembic"
    if not (checkout / "env.py").is_file():
        raise RuntimeError(f"msgsync's migration scripts are missing (looked in {packaged})")
    return checkout


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    config.attributes["database_url"] = database_url
    return config


@dataclass(frozen=True)
class Upgrade:
    """What an upgrade found and did: the revision before (None: no schema yet), the one
    after, and the migrations applied, oldest first."""

    before: str | None
    after: str
    applied: tuple[str, ...]

    def describe(self) -> str:
        """In words, for `msgsync migrate`."""
        if not self.applied:
            return f"already at revision {self.after} (the latest), nothing to do"
        steps = f"{len(self.applied)} migration{'s' if len(self.applied) > 1 else ''}"
        if self.before is None:
            return f"created the schema at revision {self.after} (the latest; {steps})"
        return f"upgraded the schema from revision {self.before} to {self.after} ({steps})"


def upgrade_to_head(database_url: str) -> Upgrade:
    """Blocking (Alembic runs its own event loop): call it from a thread inside the server."""
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    applied = tuple(config.attributes.get("applied", ()))
    before = config.attributes.get("revision_before")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None  # the scripts have a single head (tests/test_migrations.py)
    return Upgrade(before, head, applied)


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
