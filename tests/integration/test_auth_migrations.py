"""auth's migrations on SQLite and PostgreSQL: 0002 keeps the sessions of 0001, matches the models, reverts."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.engine import create_engine
from db.migrations import alembic_config, upgrade_async
from db.provision import fresh_databases
from handlers.auth.main import MIGRATIONS
from handlers.auth.models import AuthBase
from tests.harness import POSTGRES_URL, postgres_available, unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/auth.db"
        return
    problem = await postgres_available()
    if problem is not None:
        unavailable(f"PostgreSQL at {POSTGRES_URL} ({problem})")
    async with fresh_databases(POSTGRES_URL, [f"busway_test_migrations_{uuid.uuid4().hex[:8]}"]) as [url]:
        yield url


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), AuthBase.metadata))


async def test_0002_keeps_existing_sessions_matches_the_models_and_reverts(empty_database: str) -> None:
    await upgrade_async(MIGRATIONS, empty_database, "0001")
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO sessions (id, user_id, refresh_token_hash, created_at, last_used_at)"
                    " VALUES ('s1', 'u1', 'h1', :now, :now)"
                ),
                {"now": datetime.now(UTC)},
            )

        await upgrade_async(MIGRATIONS, empty_database, "head")
        async with engine.connect() as connection:
            kept = (await connection.execute(text("SELECT id, revoked_reason FROM sessions"))).all()
            assert [tuple(row) for row in kept] == [("s1", None)]
            assert await connection.run_sync(_differences) == []

        await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, empty_database), "0001")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(sync.dialect.get_table_names(sync)))
            assert "handled_commands" not in tables
            assert "sessions" in tables
        await upgrade_async(MIGRATIONS, empty_database, "head")
    finally:
        await engine.dispose()
