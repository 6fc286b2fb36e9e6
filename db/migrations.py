"""Alembic, one history per service: the runner (CLI, start-up, tests) and env.py's body."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from db.engine import create_engine, is_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (with Mako) is imported only when migrations run: a service started with
# migrate-on-start off, as in production, never loads it (auth: 102 -> 87 MB of RSS).


def alembic_config(script_location: Path, url: str) -> "Config":
    """An Alembic config for one service's history against ``url``."""
    from alembic.config import Config  # noqa: PLC0415 (see above)

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(script_location: Path, url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; from synchronous code)."""
    from alembic import command  # noqa: PLC0415 (see above)

    if is_sqlite(url):
        # Creates the database file's folder before Alembic connects.
        asyncio.run(create_engine(url).dispose())
    command.upgrade(alembic_config(script_location, url), revision)


async def upgrade_async(script_location: Path, url: str, revision: str = "head") -> None:
    """Apply migrations from async code (Alembic's env runs its own loop in a thread)."""
    await asyncio.to_thread(upgrade, script_location, url, revision)


def migrate_at_start(script_location: Path, url: str, *, enabled: bool) -> Callable[[], Awaitable[None]]:
    """A start-up hook that applies the migrations when ``enabled`` (development default)."""

    async def migrate() -> None:
        if enabled:
            await upgrade_async(script_location, url)

    return migrate


def run_env(context: Any, metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    url = context.config.get_main_option("sqlalchemy.url")
    batch = is_sqlite(url)
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=batch)
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=batch)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(online())
