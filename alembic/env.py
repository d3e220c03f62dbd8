"""Alembic environment: async engine, the models' metadata, batch mode for SQLite."""

from __future__ import annotations

import asyncio
import logging.config
from collections.abc import Collection, Mapping
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.config import Settings
from app.db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url else Settings().database_url


def _configure(connection: Connection) -> None:
    # What the run found and did, for `msgsync migrate` to say so (app.db.migrations).
    applied: list[str] = config.attributes.setdefault("applied", [])

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        applied.append(step.up_revision_id or "base")

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=record,
    )
    config.attributes["revision_before"] = context.get_context().get_current_revision()
    with context.begin_transaction():
        context.run_migrations()


# Each connection attempt of `msgsync migrate` (per host listed): a primary that died
# without closing its connections (a dead machine, a stalled server) fails the migration
# then, instead of holding it for as long as TCP keeps trying.
CONNECT_TIMEOUT_SECONDS = 10


async def _run_online() -> None:
    url = _url()
    options = {} if url.startswith("sqlite") else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=options)
    async with engine.connect() as connection:
        await connection.run_sync(_configure)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
