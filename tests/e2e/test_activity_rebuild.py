"""Rebuilding the activity trail from scratch with ``busway replay --to-group activity``: the
same trail as before, and the users and auth groups see nothing of it."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from handlers.activity.main import reset
from tests.e2e.conftest import PASSWORD, register_and_login
from tests.e2e.test_activity import ACTIVITY, trail_of_length
from tests.harness import Databases, System, eventually, run_system
from tests.integration.replaying import busway

pytestmark = pytest.mark.e2e


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with the activity service."""
    async with run_system(databases, redis_url=redis_url, include=("activity",)) as running:
        yield running


async def _groups(redis: Redis, system: System) -> dict[tuple[str, str], tuple[Any, Any]]:
    """(stream, group) -> (last delivered id, entries read) for every group on the event streams."""
    found: dict[tuple[str, str], tuple[Any, Any]] = {}
    for base in ("events.auth", "events.users"):
        for group in await redis.xinfo_groups(system.stream(base)):
            found[(base, group["name"].decode())] = (group["last-delivered-id"], group["entries-read"])
    return found


async def test_replay_into_the_activity_group_rebuilds_the_same_trail(system: System) -> None:
    account = await register_and_login(system, display_name="Rebuilt")
    wrong = await system.http.post("/v1/auth/login", json={"email": account.email, "password": "not it"})
    assert wrong.status_code == 401
    again = await system.http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert again.status_code == 200
    edited = await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": "Rebuilt Too"})
    assert edited.status_code == 200
    before = await trail_of_length(system, account, 5)

    redis = Redis.from_url(system.bus.redis_url)
    try:
        # The whole system is idle: every group has read everything.
        async def caught_up() -> bool:
            return all(int(pending["pending"]) == 0 for pending in await _pending(redis, system))

        await eventually(caught_up, what="every group to finish")
        groups_before = await _groups(redis, system)
        lengths_before = {base: await redis.xlen(system.stream(base)) for base in ("events.auth", "events.users")}

        entries, handled = await reset(system.settings["activity"])
        assert entries >= 5
        assert handled > 0
        emptied = await system.http.get(ACTIVITY, headers=account.auth)
        assert emptied.json()["items"] == []

        for base in ("events.auth", "events.users"):
            result = await busway(system.bus, "replay", "--stream", base, "--to-group", "activity")
            assert result.exit_code == 0, result.output

        after = await trail_of_length(system, account, 5)
        assert after == before

        # Only the activity group saw the replay: the others stand where they stood.
        groups_after = await _groups(redis, system)
        others = {key: value for key, value in groups_after.items() if key[1] != "activity"}
        assert others == {key: value for key, value in groups_before.items() if key[1] != "activity"}
        assert {group for _, group in others} >= {"users", "auth"}
        for base, length in lengths_before.items():
            assert await redis.xlen(system.stream(base)) == length  # nothing appended to the event streams
            for group in ("users", "auth"):
                assert await redis.xlen(system.stream(f"replay.{group}.{base}")) == 0
    finally:
        await redis.aclose()


async def _pending(redis: Redis, system: System) -> list[Any]:
    summaries = []
    for base in ("events.auth", "events.users"):
        for group in await redis.xinfo_groups(system.stream(base)):
            summaries.append(await redis.xpending(system.stream(base), group["name"]))
    return summaries
