"""Fixtures: real Redis, one database per service per backend, the system in-process."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from loguru import logger

from bus.logs import configure_logging
from tests.harness import (
    REDIS_URL,
    Databases,
    System,
    postgres_databases,
    redis_available,
    run_system,
    sqlite_databases,
    unavailable,
)


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("tests", "text", "WARNING")


@pytest.fixture(scope="session")
async def redis_url() -> str:
    """A Redis that answers; fails in CI, skips elsewhere, when there is none."""
    if not await redis_available(REDIS_URL):
        unavailable(f"Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Databases]:
    """Each service's database, once per backend per test session."""
    if request.param == "sqlite":
        async with sqlite_databases(tmp_path_factory.mktemp("sqlite")) as found:
            yield found
    else:
        async with postgres_databases() as found:
            yield found


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The whole system in this process, on a prefix of its own."""
    async with run_system(databases, redis_url=redis_url) as running:
        yield running


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Every log record emitted during the test (all levels)."""
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    yield records
    logger.remove(sink)
