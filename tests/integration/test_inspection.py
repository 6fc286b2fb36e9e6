"""busway streams and busway dlq on real Redis: groups, consumers, backlogs, dead letters."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from bus.settings import BusSettings
from tests.integration.replaying import busway, data, fresh_bus, message, raw_entries, text

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[tuple[BusSettings, Redis]]:
    async with fresh_bus(redis_url) as found:
        yield found


async def test_streams_shows_length_groups_consumers_and_the_oldest_pending_entry(
    bus: tuple[BusSettings, Redis],
) -> None:
    settings, redis = bus
    name = settings.name("events.auth")
    first = text(await redis.xadd(name, {"__data__": data(message())}))
    await redis.xadd(name, {"__data__": data(message())})
    await redis.xgroup_create(name, "users", id="0")
    await redis.xgroup_create(name, "mailer", id="0")
    await redis.xreadgroup("users", "users-1", {name: ">"}, count=1)  # read, never acked: pending
    await redis.xgroup_create(settings.name("users.get"), "users", id="0", mkstream=True)
    await redis.hset(settings.name("events.auth:failures"), "1-0", "not a stream")

    result = await busway(settings, "streams", "--json")
    assert result.exit_code == 0, result.output
    found = {info["stream"]: info for info in json.loads(result.stdout)}
    assert sorted(found) == ["events.auth", "users.get"]
    auth = found["events.auth"]
    assert auth["length"] == 2
    groups = {group["name"]: group for group in auth["groups"]}
    users, mailer = groups["users"], groups["mailer"]
    assert [(c["name"], c["pending"]) for c in users["consumers"]] == [("users-1", 1)]
    assert users["pending"] == 1
    assert users["lag"] == 1
    assert users["oldest_pending_id"] == first
    assert 0 <= users["oldest_pending_age_s"] < 60
    assert users["oldest_pending_idle_s"] is not None
    assert (mailer["consumers"], mailer["pending"], mailer["lag"], mailer["oldest_pending_id"]) == ([], 0, 2, None)
    assert found["users.get"]["length"] == 0

    table = await busway(settings, "streams")
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if "events.auth" in line]
    assert len(rows) == 2
    assert any("users" in row and first in row for row in rows)


async def test_streams_under_an_empty_prefix_says_so(bus: tuple[BusSettings, Redis]) -> None:
    settings, _ = bus
    result = await busway(settings, "streams")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"no streams under BUS_PREFIX='{settings.prefix}'"
    assert json.loads((await busway(settings, "streams", "--json")).stdout) == []


async def dead_letter(redis: Redis, settings: BusSettings, source: str) -> str:
    """A dead letter as bus.middleware writes it."""
    original = message("UserLoggedIn", correlation_id="corr-1")
    entry: dict[FieldT, EncodableT] = {
        "__data__": data(original),
        "source_stream": settings.name(source),
        "source_id": "1-0",
        "group": "users",
        "attempts": "6",
        "error": "RuntimeError: database blip",
        "correlation_id": "corr-1",
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    return text(await redis.xadd(settings.name(f"dlq.{source}"), entry))


async def test_dlq_lists_shows_and_purges_dead_letters(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    ids = [await dead_letter(redis, settings, "events.auth") for _ in range(3)]
    await dead_letter(redis, settings, "events.users")
    await redis.xadd(settings.name("events.auth"), {"__data__": data(message())})

    listed = await busway(settings, "dlq", "--json")
    assert listed.exit_code == 0, listed.output
    assert [(s["stream"], s["source"], s["entries"]) for s in json.loads(listed.stdout)] == [
        ("dlq.events.auth", "events.auth", 3),
        ("dlq.events.users", "events.users", 1),
    ]
    table = await busway(settings, "dlq")
    assert "dlq.events.auth" in table.stdout
    assert "dlq.events.users" in table.stdout

    shown = await busway(settings, "dlq", "show", "events.auth", "--count", "2", "--json")
    assert shown.exit_code == 0, shown.output
    letters = json.loads(shown.stdout)
    assert [letter["entry_id"] for letter in letters] == ids[:2]
    assert letters[0]["attempts"] == 6
    assert letters[0]["error"] == "RuntimeError: database blip"
    assert letters[0]["type"] == "UserLoggedIn"
    assert letters[0]["correlation_id"] == "corr-1"
    assert letters[0]["source_stream"] == "events.auth"

    refused = await busway(settings, "dlq", "purge", "events.auth", "--to-id", ids[1], env={}, input_text="n\n")
    assert refused.exit_code == 1
    assert "busway: nothing deleted" in refused.stderr
    assert await redis.xlen(settings.name("dlq.events.auth")) == 3

    partial = await busway(settings, "dlq", "purge", "dlq.events.auth", "--to-id", ids[1], input_text="y\n")
    assert partial.exit_code == 0, partial.output
    assert "deleted 2 entries from dlq.events.auth" in partial.stdout
    assert [entry_id for entry_id, _ in await raw_entries(redis, settings.name("dlq.events.auth"))] == ids[2:]

    everything = await busway(settings, "dlq", "purge", "events.users", "--yes")
    assert everything.stdout.strip() == "deleted 1 entries from dlq.events.users"
    assert await redis.xlen(settings.name("dlq.events.users")) == 0
    assert await redis.xlen(settings.name("events.auth")) == 1  # a source stream is never touched


async def test_dlq_errors_are_one_line(bus: tuple[BusSettings, Redis]) -> None:
    settings, _ = bus
    for args in (["dlq", "show", "events.nope"], ["dlq", "purge", "events.nope", "--yes"]):
        result = await busway(settings, *args)
        assert result.exit_code == 1
        assert result.stderr.strip() == "busway: no dead-letter stream named 'dlq.events.nope'"
    result = await busway(settings, "dlq", "purge", "events.auth", "--to-id", "soon", "--yes")
    assert result.exit_code == 2
    assert result.stderr.strip() == "busway: --to-id: 'soon' is not a stream entry id (like 1718000000000-0)"
    empty = await busway(settings, "dlq")
    assert empty.stdout.strip() == f"no dead-letter streams under BUS_PREFIX='{settings.prefix}'"
