"""A service's event log on SQLite and PostgreSQL: exported with filters, pruned after its retention."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from db.engine import SessionFactory, create_engine, session_factory
from db.eventlog import EventLogPruner, prune_published, read_log
from db.outbox import add_event
from handlers.users.models import Outbox
from schemas.envelope import Trace
from schemas.eventlog import EventLogRecord
from schemas.events import UserUpdated
from tests.harness import Databases, System, eventually

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
async def sessions(databases: Databases) -> AsyncIterator[SessionFactory]:
    engine = create_engine(databases.users_url)
    yield session_factory(engine)
    await engine.dispose()


async def add(
    sessions: SessionFactory,
    *,
    correlation_id: str,
    occurred_at: datetime = NOW,
    published_at: datetime | None = NOW,
    name: str = "X",
) -> str:
    """One UserUpdated in users' outbox; its id."""
    async with sessions() as session, session.begin():
        row = add_event(
            session,
            Outbox,
            "events.users",
            UserUpdated(user_id="u", changes={"display_name": name}),
            trace=Trace(correlation_id=correlation_id),
            producer="users",
        )
        row.occurred_at = occurred_at
        row.published_at = published_at
    return row.id


async def surviving(sessions: SessionFactory, ids: list[str]) -> set[str]:
    async with sessions() as session:
        return set((await session.exec(select(Outbox.id).where(col(Outbox.id).in_(ids)))).all())


async def export(databases: Databases, *args: str) -> list[EventLogRecord]:
    env = {**os.environ, "USERS_DATABASE_URL": databases.users_url, "BUSWAY_ENV": "test"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handlers.users", "eventlog", *args,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    assert child.returncode == 0, err
    return [EventLogRecord.model_validate_json(line) for line in out.decode().splitlines()]


async def test_the_export_holds_published_events_in_order_filtered_in_the_database(
    databases: Databases, sessions: SessionFactory
) -> None:
    corr = uuid.uuid4().hex
    early = await add(sessions, correlation_id=corr, occurred_at=NOW - timedelta(hours=3), name="early")
    middle = await add(sessions, correlation_id=corr, occurred_at=NOW - timedelta(hours=2), name="middle")
    late = await add(sessions, correlation_id=corr, occurred_at=NOW - timedelta(hours=1), name="late")
    await add(sessions, correlation_id=corr, published_at=None, name="unpublished")
    await add(sessions, correlation_id=uuid.uuid4().hex, name="other")

    records = await export(databases, f"--correlation-id={corr}", "--type=UserUpdated")
    assert [record.message.id for record in records] == [early, middle, late]
    first = records[0]
    assert first.stream == "events.users"
    assert [int(record.position or 0) for record in records] == sorted(int(r.position or 0) for r in records)
    assert first.message.type == "UserUpdated"
    assert first.message.correlation_id == corr
    assert first.message.producer == "users"
    assert first.message.payload == {"user_id": "u", "changes": {"display_name": "early"}}
    assert first.message.occurred_at == NOW - timedelta(hours=3)

    since, until = (NOW - timedelta(minutes=150)).isoformat(), (NOW - timedelta(hours=2)).isoformat()
    records = await export(databases, f"--correlation-id={corr}", f"--since={since}", f"--until={until}")
    assert [record.message.id for record in records] == [middle]  # both bounds inclusive

    async def ids(**filters: Any) -> list[str]:
        return [row.id async for row in read_log(sessions, Outbox, correlation_id=corr, **filters)]

    assert await ids(types=["UserCreated"]) == []
    assert await ids(since=NOW - timedelta(hours=2)) == [middle, late]
    assert await ids(batch=1) == [early, middle, late]


async def test_pruning_deletes_published_events_past_retention_and_never_unpublished_ones(
    sessions: SessionFactory,
) -> None:
    corr = uuid.uuid4().hex
    days = timedelta(days=1)
    old = await add(sessions, correlation_id=corr, occurred_at=NOW - 41 * days, published_at=NOW - 40 * days)
    recent = await add(sessions, correlation_id=corr, published_at=NOW - timedelta(days=29))
    stuck = await add(sessions, correlation_id=corr, occurred_at=NOW - timedelta(days=90), published_at=None)
    ids = [old, recent, stuck]

    assert await EventLogPruner(sessions, Outbox, retention_days=0).prune() == 0  # 0 keeps everything
    assert await surviving(sessions, ids) == set(ids)
    assert await EventLogPruner(sessions, Outbox, retention_days=30).prune() >= 1
    assert await surviving(sessions, ids) == {recent, stuck}
    assert await prune_published(sessions, Outbox, before=NOW - timedelta(days=28), batch=1) >= 1
    assert await surviving(sessions, ids) == {stuck}


async def test_a_running_service_prunes_its_event_log(system: System) -> None:
    sessions = system.sessions("users")
    old = await add(sessions, correlation_id=uuid.uuid4().hex, published_at=NOW - timedelta(days=31))
    kept = await add(sessions, correlation_id=uuid.uuid4().hex, published_at=NOW - timedelta(days=29))
    await system.restart("users")  # prunes on start, then every USERS_EVENT_LOG_PRUNE_INTERVAL

    async def pruned() -> bool:
        return await surviving(sessions, [old, kept]) == {kept}

    await eventually(pruned, what="users to prune its event log")
