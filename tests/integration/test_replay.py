"""busway replay on real Redis: sources (stream ranges, dead letters, event logs, files),
targets (a stream, one group), filters, dry runs, errors, and a re-run after an interrupt."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlmodel import col, func, select

from bus.settings import BusSettings
from handlers.users.models import Inbox as UsersInbox
from handlers.users.models import Outbox as UsersOutbox
from handlers.users.models import Profile
from handlers.users.service import UsersService
from schemas.envelope import Trace
from schemas.eventlog import EventLogRecord
from schemas.events import RegistrationStarted
from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import System, eventually
from tests.integration.replaying import busway, data, entries, exported, fresh_bus, message, raw_entries, subscriber

pytestmark = pytest.mark.integration

BUSWAY = str(Path(sys.executable).parent / "busway")


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[tuple[BusSettings, Redis]]:
    async with fresh_bus(redis_url, claim_idle_ms=300, max_deliveries=2) as found:
        yield found


async def fill(redis: Redis, name: str, rows: list[tuple[str, bytes]]) -> None:
    for entry_id, body in rows:
        await redis.xadd(name, {"__data__": body}, id=entry_id)


def listed_ids(output: str) -> list[str]:
    """The message ids in a dry run's listing."""
    return [line.split()[1] for line in output.splitlines()[1:-1]]


# --- a stream as the source ------------------------------------------------------------


async def test_a_range_of_ids_or_times_selects_entries_and_a_dry_run_sends_nothing(
    bus: tuple[BusSettings, Redis],
) -> None:
    settings, redis = bus
    a, b, c = message(correlation_id="c1"), message("RegistrationStarted", correlation_id="c1"), message()
    name = settings.name("events.test")
    await fill(redis, name, [("1000-0", data(a)), ("2000-0", data(b)), ("3000-0", data(c)), ("3000-1", b"junk")])

    args = ["replay", "--stream", "events.test"]
    result = await busway(settings, *args, "--from-id", "2000", "--to-id", "3000-1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert listed_ids(result.stdout) == [b["id"], c["id"]]
    assert result.stdout.splitlines()[-1] == "dry run, nothing sent: read 3, matched 2, sent 0, skipped 1"
    row = result.stdout.splitlines()[1].split()
    assert row == ["2000-0", b["id"], "RegistrationStarted", "c1", b["occurred_at"], "events.test"]

    result = await busway(
        settings, "replay", "--stream", "events.test", "--since", "1970-01-01T00:00:02Z",
        "--until", "1970-01-01T00:00:02.999Z", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert listed_ids(result.stdout) == [b["id"]]
    assert await redis.xlen(name) == 4


async def test_filters_pick_by_type_and_correlation_and_the_entry_goes_back_unchanged(
    bus: tuple[BusSettings, Redis],
) -> None:
    settings, redis = bus
    a, b, c = message(correlation_id="c1"), message("RegistrationStarted", correlation_id="c1"), message()
    name = settings.name("events.test")
    await fill(redis, name, [("1000-0", data(a)), ("2000-0", data(b)), ("3000-0", data(c))])

    args = ["replay", "--stream", "events.test"]
    result = await busway(settings, *args, "--type", "UserLoggedIn", "--correlation-id", "c1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "read 3, matched 1, sent 1, skipped 2"
    assert (await entries(redis, name))[-1][1] == data(a)  # byte for byte: same id, same envelope

    result = await busway(settings, *args, "--type", "UserLoggedIn", "--type", "RegistrationStarted", "--dry-run")
    assert listed_ids(result.stdout) == [a["id"], b["id"], c["id"], a["id"]]


async def test_to_stream_copies_entries_to_another_existing_stream(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    originals = [("1000-0", data(message())), ("2000-0", data(message()))]
    await fill(redis, settings.name("events.test"), originals)
    await redis.xgroup_create(settings.name("events.copy"), "someone", id="0", mkstream=True)

    result = await busway(settings, "replay", "--stream", "events.test", "--to-stream", "events.copy")
    assert result.exit_code == 0, result.output
    assert [body for _, body in await entries(redis, settings.name("events.copy"))] == [b for _, b in originals]

    result = await busway(settings, "replay", "--stream", "events.test", "--to-stream", "events.nowhere")
    assert result.exit_code == 1
    assert result.stderr.strip() == "busway: no stream named 'events.nowhere' to replay into"
    assert not await redis.exists(settings.name("events.nowhere"))


async def test_an_unknown_stream_fails_and_an_empty_range_has_nothing_to_replay(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    await fill(redis, settings.name("events.test"), [("1000-0", data(message()))])

    result = await busway(settings, "replay", "--stream", "events.nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"busway: no stream named 'events.nope' under BUS_PREFIX='{settings.prefix}'"
    result = await busway(settings, "replay", "--dlq", "events.test")
    assert result.exit_code == 1
    assert "no stream named 'dlq.events.test'" in result.stderr

    result = await busway(settings, "replay", "--stream", "events.test", "--from-id", "5000")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "nothing to replay (read 0, matched 0, sent 0, skipped 0)"
    result = await busway(settings, "replay", "--stream", "events.test", "--type", "NoSuchType")
    assert result.exit_code == 0
    assert result.stdout.strip() == "nothing to replay (read 1, matched 0, sent 0, skipped 1)"
    assert await redis.xlen(settings.name("events.test")) == 1


async def test_the_prefix_decides_which_streams_are_seen(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    await fill(redis, settings.name("events.test"), [("1000-0", data(message()))])
    other = BusSettings(redis_url=settings.redis_url, prefix=f"{settings.prefix}other:")
    result = await busway(other, "replay", "--stream", "events.test", "--dry-run")
    assert result.exit_code == 1
    assert "no stream named 'events.test'" in result.stderr


# --- one consumer group as the target -------------------------------------------------


async def test_replaying_into_one_group_reaches_it_and_no_other(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    events = [message() for _ in range(3)]
    ids = [event["id"] for event in events]
    async with (
        subscriber(settings, "audit", "events.auth") as audit,
        subscriber(settings, "mailer", "events.auth") as mailer,
    ):
        for event in events:
            await redis.xadd(settings.name("events.auth"), {"__data__": data(event)})
        await eventually(lambda: _at_least(audit.ids, 3), what="audit to read the stream")
        await eventually(lambda: _at_least(mailer.ids, 3), what="mailer to read the stream")

        result = await busway(settings, "replay", "--stream", "events.auth", "--to-group", "audit")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "read 3, matched 3, sent 3, skipped 0"
        await eventually(lambda: _at_least(audit.ids, 6), what="audit to read its replay stream")

        assert audit.ids == ids + ids  # the same messages, ids kept
        assert audit.streams[3:] == [settings.name("replay.audit.events.auth")] * 3
        assert mailer.ids == ids
        # Nothing is waiting for mailer anywhere: it never sees the replay.
        assert await redis.xlen(settings.name("events.auth")) == 3
        assert await redis.xlen(settings.name("replay.mailer.events.auth")) == 0
        [group] = await redis.xinfo_groups(settings.name("replay.audit.events.auth"))
        assert group["name"] == b"audit"

    result = await busway(settings, "replay", "--stream", "events.auth", "--to-group", "nobody")
    assert result.exit_code == 1
    assert result.stderr.strip() == "busway: no consumer group 'nobody' reads 'events.auth' (its groups: audit, mailer)"
    assert await redis.xlen(settings.name("replay.nobody.events.auth")) == 0


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def test_a_group_that_does_not_read_its_replay_stream_yet_gets_a_warning(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    await fill(redis, settings.name("events.auth"), [("1000-0", data(message()))])
    await redis.xgroup_create(settings.name("events.auth"), "plain", id="0")  # a redis-py consumer, say

    result = await busway(settings, "replay", "--stream", "events.auth", "--to-group", "plain")
    assert result.exit_code == 0, result.output
    assert "warning: group 'plain' does not read 'replay.plain.events.auth' yet" in result.stderr
    assert await redis.xlen(settings.name("replay.plain.events.auth")) == 1


async def test_a_replay_stream_has_the_claimer_and_dead_letters_of_its_stream(bus: tuple[BusSettings, Redis]) -> None:
    settings, redis = bus
    poison = message("Poison")
    fine = message()
    refusing = True
    async with subscriber(
        settings, "audit", "events.auth", fail=lambda msg: refusing and msg.message_id == poison["id"]
    ) as audit:
        await fill(redis, settings.name("events.auth"), [("1000-0", data(fine)), ("2000-0", data(poison))])
        await eventually(lambda: _at_least(audit.ids, 1), what="audit to read the stream")
        dlq = settings.name("dlq.events.auth")
        await eventually(lambda: redis.xlen(dlq), what="the poison's dead letter")

        result = await busway(settings, "replay", "--dlq", "events.auth", "--to-group", "audit")
        assert result.exit_code == 0, result.output
        replay_dlq = settings.name("dlq.replay.audit.events.auth")
        await eventually(lambda: redis.xlen(replay_dlq), timeout=15, what="the replayed poison's dead letter")
        [(_, fields)] = await raw_entries(redis, replay_dlq)
        assert fields[b"source_stream"] == settings.name("replay.audit.events.auth").encode()
        assert fields[b"__data__"] == data(poison)
        assert int(fields[b"attempts"]) == 3

        # Once the handler is fixed, the replay stream's dead letter goes back to it alone.
        refusing = False
        result = await busway(settings, "replay", "--dlq", "replay.audit.events.auth", "--dry-run")
        assert result.stdout.splitlines()[1].split()[-1] == "replay.audit.events.auth"
        result = await busway(settings, "replay", "--dlq", "replay.audit.events.auth")
        assert result.exit_code == 0, result.output
        await eventually(lambda: _contains(audit.ids, poison["id"]), what="the poison to be handled at last")
        assert audit.ids == [fine["id"], poison["id"]]


async def _contains(items: list[str], item: str) -> bool:
    return item in items


# --- dead letters of a real service -----------------------------------------------------


def failing_users(email: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """users fails on ``email``'s RegistrationStarted while ``switch["on"]``."""
    original = UsersService.on_registration_started
    switch = {"on": True}

    async def flaky(self: UsersService, event: RegistrationStarted, event_id: str, trace: Trace) -> None:
        if switch["on"] and event.email == email:
            raise RuntimeError("database blip")
        await original(self, event, event_id, trace)

    monkeypatch.setattr(UsersService, "on_registration_started", flaky)
    return switch


async def test_a_dead_lettered_saga_step_replayed_to_its_group_completes_the_saga(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = new_email()
    switch = failing_users(email, monkeypatch)
    response = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Poison"}
    )
    assert response.status_code == 202
    registration_id = response.json()["registration_id"]
    dlq = system.stream("dlq.events.auth")
    await eventually(lambda: system.redis.xlen(dlq), timeout=20, what="the dead letter")

    listed = await busway(system.bus, "dlq", "--json")
    assert listed.exit_code == 0, listed.output
    [stream] = json.loads(listed.stdout)
    assert (stream["stream"], stream["source"], stream["entries"]) == ("dlq.events.auth", "events.auth", 1)
    shown = await busway(system.bus, "dlq", "show", "dlq.events.auth", "--json")
    assert shown.exit_code == 0, shown.output
    [letter] = json.loads(shown.stdout)
    assert letter["type"] == "RegistrationStarted"
    assert letter["group"] == "users"
    assert letter["attempts"] == 4
    assert "database blip" in letter["error"]
    assert letter["correlation_id"] == response.headers["x-request-id"]
    assert letter["source_stream"] == "events.auth"
    table = await busway(system.bus, "dlq", "show", "events.auth")
    assert "RegistrationStarted" in table.stdout
    assert "database blip" in table.stdout

    dry = await busway(system.bus, "replay", "--dlq", "events.auth", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines()[1].split()[-1] == "events.auth"  # default: back to the original stream

    switch["on"] = False
    result = await busway(system.bus, "replay", "--dlq", "events.auth", "--to-group", "users")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "read 1, matched 1, sent 1, skipped 0"
    [(_, replayed)] = await entries(system.redis, system.stream("replay.users.events.auth"))
    [(_, dead)] = await entries(system.redis, dlq)
    assert replayed == dead  # the original message, not the dead-letter entry

    async def completed() -> bool:
        state = (await system.http.get(f"/v1/auth/registrations/{registration_id}")).json()
        return bool(state["state"] == "completed")

    await eventually(completed, what="the saga to complete after the replay")
    async with system.sessions("users")() as session:
        assert len((await session.exec(select(Profile).where(Profile.email == email))).all()) == 1

    purged = await busway(system.bus, "dlq", "purge", "events.auth", "--yes")
    assert purged.exit_code == 0, purged.output
    assert purged.stdout.strip() == "deleted 1 entries from dlq.events.auth"
    assert await system.redis.xlen(dlq) == 0


# --- a service's event log ---------------------------------------------------------------


def log_env(system: System) -> dict[str, str]:
    return {
        "USERS_DATABASE_URL": system.databases.users_url,
        "AUTH_DATABASE_URL": system.databases.auth_url,
        "BUSWAY_ENV": "test",
    }


async def test_a_service_event_log_replays_into_one_group(system: System) -> None:
    async with subscriber(system.bus, "audit", "events.users") as audit:
        email = new_email()
        created = await system.http.post(
            "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Logged"}
        )
        assert created.status_code == 201
        login = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200
        login_correlation = login.headers["x-request-id"]

        async def logged_in() -> dict[str, Any] | None:
            for _, body in await entries(system.redis, system.stream("events.auth")):
                event: dict[str, Any] = json.loads(body)
                if event["type"] == "UserLoggedIn" and event["correlation_id"] == login_correlation:
                    return event
            return None

        relayed = await eventually(logged_in, what="UserLoggedIn on events.auth")

        dry = await busway(
            system.bus, "replay", "--from-log", "auth", "--type", "UserLoggedIn",
            "--correlation-id", login_correlation, "--dry-run", env=log_env(system),
        )  # fmt: skip
        assert dry.exit_code == 0, dry.output
        assert listed_ids(dry.stdout) == [relayed["id"]]
        assert dry.stdout.splitlines()[1].split()[-1] == "events.auth"
        assert dry.stdout.splitlines()[-1] == "dry run, nothing sent: read 1, matched 1, sent 0, skipped 0"

        user_created = await eventually(lambda: _first(audit.ids), what="audit to see UserCreated")
        result = await busway(
            system.bus, "replay", "--from-log", "users", "--correlation-id", created.headers["x-request-id"],
            "--to-group", "audit", env=log_env(system),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "read 1, matched 1, sent 1, skipped 0"
        await eventually(lambda: _at_least(audit.ids, 2), what="audit to get the replay")
        assert audit.ids == [user_created, user_created]
        assert await system.redis.xlen(system.stream("replay.auth.events.users")) == 0

        later = await busway(
            system.bus, "replay", "--from-log", "auth", "--since", "2999-01-01T00:00:00Z", env=log_env(system)
        )
        assert later.exit_code == 0, later.output
        assert later.stdout.strip() == "nothing to replay (read 0, matched 0, sent 0, skipped 0)"


async def _first(items: list[str]) -> str | None:
    return items[0] if items else None


async def test_an_unreadable_event_log_is_one_line(system: System, tmp_path: Path) -> None:
    env = {**log_env(system), "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/missing/auth.db"}
    result = await busway(system.bus, "replay", "--from-log", "auth", "--dry-run", env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"busway: cannot read the auth event log: no database at {tmp_path}/missing/auth.db; set AUTH_DATABASE_URL"
    )
    env = {**log_env(system), "USERS_DATABASE_URL": "mysql://nope"}
    result = await busway(system.bus, "replay", "--from-log", "users", "--dry-run", env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "busway: cannot read the users event log: Invalid configuration: USERS_DATABASE_URL"
    )
    assert len(result.stderr.splitlines()) == 1


async def test_a_stream_exported_to_a_file_replays_from_it(bus: tuple[BusSettings, Redis], tmp_path: Path) -> None:
    settings, redis = bus
    originals = [message() for _ in range(3)]
    await fill(redis, settings.name("events.test"), [(f"{n}000-0", data(m)) for n, m in enumerate(originals, 1)])
    exported = tmp_path / "events.jsonl"
    result = await busway(settings, "replay", "--stream", "events.test", "--to-file", str(exported))
    assert result.exit_code == 0, result.output
    records = [EventLogRecord.model_validate_json(line) for line in exported.read_text().splitlines()]
    assert [(r.stream, r.position, r.message.id) for r in records] == [
        ("events.test", f"{n}000-0", m["id"]) for n, m in enumerate(originals, 1)
    ]

    result = await busway(settings, "replay", "--from-file", str(exported))
    assert result.exit_code == 0, result.output
    copies = await entries(redis, settings.name("events.test"))
    assert [json.loads(body) for _, body in copies[3:]] == [json.loads(data(m)) for m in originals]


# --- interrupted, then run again -------------------------------------------------------


async def test_an_interrupted_replay_run_again_has_each_effect_once(system: System, tmp_path: Path) -> None:
    """users keeps an inbox: entries sent twice (before the interrupt and again) create one profile each."""
    count = 40
    started = [
        message(
            "RegistrationStarted",
            registration_id=uuid.uuid4().hex,
            user_id=uuid.uuid4().hex,
            email=new_email(),
            display_name="Replayed",
        )
        for _ in range(count)
    ]
    source = tmp_path / "started.jsonl"
    # As an exporting service writes them: signed by their producer (auth), or users refuses them.
    lines = (json.dumps({"stream": "events.auth", "message": exported(m)}) + "\n" for m in started)
    source.write_text("".join(lines))
    replay_stream = system.stream("replay.users.events.auth")
    env = {**os.environ, "REDIS_URL": system.bus.redis_url, "BUS_PREFIX": system.prefix}
    args = [BUSWAY, "replay", "--from-file", str(source), "--to-group", "users"]

    child = await asyncio.create_subprocess_exec(
        *args, "--rate", "8", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # A shell running pytest in the background ignores SIGINT, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    await eventually(lambda: _length_at_least(system.redis, replay_stream, 4), what="the first entries to go out")
    child.send_signal(signal.SIGINT)
    out, err = await child.communicate()
    assert child.returncode == 130, (out, err)
    interrupted = err.decode().strip().splitlines()[-1]
    assert interrupted.startswith(f"interrupted: read {count}, matched {count}, sent ")
    sent_before = int(interrupted.split("sent ")[1].split(",")[0])
    assert 0 < sent_before < count

    again = await busway(system.bus, "replay", "--from-file", str(source), "--to-group", "users")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"read {count}, matched {count}, sent {count}, skipped 0"
    assert await system.redis.xlen(replay_stream) >= count + sent_before

    async def all_handled() -> bool:
        [group] = await system.redis.xinfo_groups(replay_stream)
        return int(group["pending"]) == 0 and int(group["lag"]) == 0

    await eventually(all_handled, timeout=30, what="users to handle every replayed entry")
    registrations = [m["payload"]["registration_id"] for m in started]
    async with system.sessions("users")() as session:
        profiles = (
            await session.exec(select(func.count()).where(col(Profile.registration_id).in_(registrations)))
        ).one()
        emitted = (
            await session.exec(
                select(UsersOutbox.type, func.count())
                .where(col(UsersOutbox.correlation_id).in_([m["correlation_id"] for m in started]))
                .group_by(col(UsersOutbox.type))
            )
        ).all()
        handled = (
            await session.exec(select(func.count()).where(col(UsersInbox.event_id).in_([m["id"] for m in started])))
        ).one()
    assert profiles == count
    assert dict(emitted) == {"UserCreated": count}  # no UserCreationFailed: duplicates changed nothing
    assert handled == count


async def _length_at_least(redis: Redis, name: str, count: int) -> bool:
    return int(await redis.xlen(name)) >= count
