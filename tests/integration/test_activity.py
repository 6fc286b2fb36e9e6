"""The activity service records each event once, however often it is delivered, and can be reset."""

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from db.engine import create_engine, session_factory
from db.migrations import upgrade_async
from handlers.activity.main import MIGRATIONS
from handlers.activity.models import ActivityRow, Inbox
from handlers.activity.service import ActivityService
from schemas.commands import ListActivity
from schemas.events import (
    LoginFailed,
    PasswordChanged,
    RegistrationCompleted,
    RegistrationStarted,
    SessionRevoked,
    UserLoggedIn,
    UserUpdated,
)
from tests.e2e.conftest import register_and_login
from tests.harness import Databases, System, eventually, run_system

pytestmark = pytest.mark.integration


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with the activity service."""
    async with run_system(databases, redis_url=redis_url, include=("activity",)) as running:
        yield running


async def rows_for(system: System, event_id: str) -> tuple[int, int]:
    """How many trail rows and inbox rows the event has."""
    async with system.sessions("activity")() as session:
        rows = (await session.exec(select(func.count()).where(col(ActivityRow.event_id) == event_id))).one()
        handled = (await session.exec(select(func.count()).where(col(Inbox.event_id) == event_id))).one()
    return rows, handled


async def test_the_same_entry_delivered_twice_is_recorded_once(system: System) -> None:
    account = await register_and_login(system)

    async def trail() -> list[dict[str, str]] | None:
        response = await system.http.get("/v1/users/me/activity", headers=account.auth)
        items: list[dict[str, str]] = response.json()["items"]
        return items if len(items) == 2 else None

    login, created = await eventually(trail, what="the login and the account in the trail")
    await eventually(lambda: system.caught_up("activity", "events.auth"), what="activity to read events.auth")

    for entry in (login, created):
        await system.deliver_again("events.auth", entry["id"])
    await eventually(lambda: system.caught_up("activity", "events.auth"), what="activity to handle the copies")

    assert not await system.redis.exists(system.stream("dlq.events.auth"))  # skipped, not failed
    assert await rows_for(system, login["id"]) == (1, 1)
    assert await rows_for(system, created["id"]) == (1, 1)
    response = await system.http.get("/v1/users/me/activity", headers=account.auth)
    assert response.json()["items"] == [login, created]


async def test_record_reports_whether_the_event_was_new(system: System) -> None:
    service = ActivityService(system.sessions("activity"))
    user_id, event_id = uuid.uuid4().hex, uuid.uuid4().hex
    event = UserLoggedIn(user_id=user_id, session_id="s1", ip="10.0.0.1")
    at = datetime.now(UTC)

    assert await service.record(event, event_id, at) is True
    assert await service.record(event, event_id, at) is False
    not_trail = RegistrationStarted(registration_id="r", user_id=user_id, email="a@example.com", display_name="A")
    assert await service.record(not_trail, uuid.uuid4().hex, at) is False

    page = await service.list(ListActivity(user_id=user_id))
    assert [(item.id, item.kind, item.ip) for item in page.items] == [(event_id, "login", "10.0.0.1")]
    assert page.next_cursor is None


async def test_every_trail_event_becomes_an_entry_with_its_details(system: System) -> None:
    service = ActivityService(system.sessions("activity"))
    user_id = uuid.uuid4().hex
    start = datetime.now(UTC)
    events = [
        RegistrationCompleted(registration_id="r1", user_id=user_id),
        UserLoggedIn(user_id=user_id, session_id="s1", ip="10.0.0.1", user_agent="ua"),
        LoginFailed(user_id=user_id, reason="invalid_password", ip="10.0.0.2"),
        UserUpdated(user_id=user_id, changes={"display_name": "New Name"}),
        PasswordChanged(user_id=user_id, via_reset=True),
        SessionRevoked(user_id=user_id, session_id="s1", reason="password_changed"),
    ]
    for offset, event in enumerate(events):
        assert await service.record(event, uuid.uuid4().hex, start + timedelta(seconds=offset))

    page = await service.list(ListActivity(user_id=user_id))
    assert [item.kind for item in page.items] == [
        "session_revoked",
        "password_changed",
        "profile_updated",
        "login_failed",
        "login",
        "account_created",
    ]
    revoked, changed, updated, failed, login, created = page.items
    assert (revoked.session_id, revoked.reason) == ("s1", "password_changed")
    assert changed.via_reset is True
    assert updated.changed == ("display_name",)
    assert "New Name" not in updated.model_dump_json()
    assert (failed.reason, failed.ip, failed.session_id) == ("invalid_password", "10.0.0.2", None)
    assert (login.session_id, login.ip, login.user_agent) == ("s1", "10.0.0.1", "ua")
    assert created.occurred_at == start


async def test_reset_empties_the_trail_and_inbox_so_replayed_events_count_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/activity.db"
    await upgrade_async(MIGRATIONS, url)
    engine = create_engine(url)
    try:
        service = ActivityService(session_factory(engine))
        event = LoginFailed(user_id="u1", reason="invalid_password")
        assert await service.record(event, "e1", datetime.now(UTC))

        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "handlers.activity", "reset"],
            env={"ACTIVITY_DATABASE_URL": url, "PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "deleted 1 activity entries and 1 inbox records" in result.stdout

        assert (await service.list(ListActivity(user_id="u1"))).items == ()
        assert await service.record(event, "e1", datetime.now(UTC))  # as a replay would
    finally:
        await engine.dispose()


def test_reset_of_a_database_without_tables_fails_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "handlers.activity", "reset"],
        env={"ACTIVITY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/empty.db", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("reset failed:")
    assert "Traceback" not in result.stderr
