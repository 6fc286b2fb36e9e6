"""Events: written with the state change, published by the relay, readable without busway,
handled once however often delivered, and not lost while a consumer is down."""

import asyncio
import contextlib
import json
import uuid
from typing import Any
from unittest import mock

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlmodel import col, select

from bus.outbox import OutboxRelay
from db.engine import SessionFactory, create_engine, session_factory
from db.outbox import SqlOutboxStore, add_event
from handlers.auth.models import Credential, RegistrationRow
from handlers.users.models import Outbox as UsersOutbox
from handlers.users.models import Profile
from schemas.envelope import Envelope, Trace
from schemas.events import UserUpdated
from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import POSTGRES_URL, REDIS_URL, System, eventually, postgres_databases, run_system, signed, signer_as

pytestmark = pytest.mark.integration


async def read_plain(redis_url: str, stream: str) -> list[dict[str, object]]:
    """Read a stream the way a non-Python consumer would: XRANGE and json.loads."""
    plain = Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await plain.xrange(stream)
    finally:
        await plain.aclose()
    return [json.loads(fields["__data__"]) for _, fields in entries or [] if fields]


async def commit_event(sessions: SessionFactory, name: str) -> UsersOutbox:
    """One UserUpdated committed to users' outbox for stream ``events.<name>``; its row."""
    async with sessions() as session, session.begin():
        row = add_event(
            session,
            UsersOutbox,
            f"events.{name}",
            UserUpdated(user_id=f"u-{name}", changes={"v": "1"}),
            trace=Trace(correlation_id=f"corr-{name}"),
            producer="users",
        )
    assert isinstance(row, UsersOutbox)
    return row


async def test_a_rolled_back_change_publishes_nothing_and_a_committed_one_publishes_once(system: System) -> None:
    sessions = system.sessions("users")
    trace = Trace(correlation_id="corr-outbox")
    event = UserUpdated(user_id="u-outbox", changes={"display_name": "X"})

    async def failed_change() -> None:
        async with sessions() as session, session.begin():
            add_event(session, UsersOutbox, "events.test", event, trace=trace, producer="users")
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await failed_change()
    async with sessions() as session, session.begin():
        row = add_event(session, UsersOutbox, "events.test", event, trace=trace, producer="users", subject="u-outbox")

    relay = OutboxRelay(SqlOutboxStore(sessions, UsersOutbox), system.bus, signer=signer_as("users"))
    try:
        assert await relay.drain() >= 1
        assert await relay.drain() == 0  # marked published: nothing twice
    finally:
        await relay.stop()

    entries = await read_plain(REDIS_URL, system.stream("events.test"))
    assert [e["id"] for e in entries] == [row.id]
    entry = entries[0]
    assert entry["type"] == "UserUpdated"
    assert entry["version"] == 1
    assert entry["correlation_id"] == "corr-outbox"
    assert entry["producer"] == "users"
    assert entry["payload"] == {"user_id": "u-outbox", "changes": {"display_name": "X"}}
    async with sessions() as session:
        stored = (await session.exec(select(UsersOutbox).where(UsersOutbox.id == row.id))).one()
    assert stored.published_at is not None


async def test_registration_events_are_readable_with_plain_redis(system: System) -> None:
    email = new_email()
    response = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Plain"}
    )
    assert response.status_code == 201
    auth_events = await read_plain(REDIS_URL, system.stream("events.auth"))
    for entry in auth_events:  # every entry is an Envelope, as schemas/envelope.py says
        Envelope.model_validate(entry)
    started = next(e for e in auth_events if e["type"] == "RegistrationStarted")
    payload = started["payload"]
    assert isinstance(payload, dict)
    assert payload["email"] == email
    assert {"id", "type", "version", "occurred_at", "correlation_id", "producer", "payload"} <= set(started)
    users_events = await read_plain(REDIS_URL, system.stream("events.users"))
    created = next(e for e in users_events if e["type"] == "UserCreated")
    assert created["causation_id"] == started["id"]
    assert created["correlation_id"] == started["correlation_id"]


async def test_a_redelivered_event_changes_nothing_twice(system: System) -> None:
    email = new_email()
    response = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Once"}
    )
    assert response.status_code == 201
    raw = Redis.from_url(REDIS_URL)
    try:
        stream = system.stream("events.auth")
        for _, fields in await raw.xrange(stream) or []:
            assert fields is not None
            data = fields[b"__data__"]
            if json.loads(data)["type"] == "RegistrationStarted":
                await raw.xadd(stream, {"__data__": data})  # the same event, delivered again
        users_stream = system.stream("events.users")

        async def settled() -> bool:
            groups = await raw.xinfo_groups(stream)
            return all(int(g["pending"]) == 0 and int(g["lag"]) == 0 for g in groups)

        await eventually(settled, what="the duplicate to be consumed")
        created = [
            e for e in await read_plain(REDIS_URL, users_stream) if e["type"] in {"UserCreated", "UserCreationFailed"}
        ]
    finally:
        await raw.aclose()
    async with system.sessions("users")() as session:
        profiles = (await session.exec(select(Profile).where(Profile.email == email))).all()
    assert len(profiles) == 1
    assert len(created) == 1


async def test_the_saga_finishes_when_a_stopped_handler_returns(system: System) -> None:
    await system.services["users"].stop()
    response = await system.http.post(
        "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "display_name": "Later"}
    )
    assert response.status_code == 202, response.text
    registration_id = response.json()["registration_id"]

    await system.restart("users")

    async def completed() -> bool:
        state = (await system.http.get(f"/v1/auth/registrations/{registration_id}")).json()
        return bool(state["state"] == "completed")

    await eventually(completed, what="the saga to finish after users returned")
    async with system.sessions("auth")() as session:
        registration = await session.get(RegistrationRow, registration_id)
        assert registration is not None
        credential = await session.get(Credential, registration.user_id)
    assert credential is not None
    assert credential.status == "active"
    async with system.sessions("users")() as session:
        assert await session.get(Profile, registration.user_id) is not None


async def test_no_credential_is_left_pending_after_many_registrations(system: System) -> None:
    emails = [new_email() for _ in range(10)]
    for email in emails:
        response = await system.http.post(
            "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": uuid.uuid4().hex[:8]}
        )
        assert response.status_code == 201
    async with system.sessions("auth")() as session:
        statuses = (await session.exec(select(Credential.status).where(col(Credential.email).in_(emails)))).all()
    assert statuses == ["active"] * 10


async def test_no_password_stays_in_redis_after_register_and_login(system: System) -> None:
    email = new_email()
    body = {"email": email, "password": PASSWORD, "display_name": "Secret"}
    assert (await system.http.post("/v1/auth/register", json=body)).status_code == 201
    assert (await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 200
    assert (await system.http.post("/v1/auth/login", json={"email": email, "password": "wrong one"})).status_code == 401
    raw = Redis.from_url(REDIS_URL)
    try:
        found = []
        async for key in raw.scan_iter(match=f"{system.prefix}*", _type="stream"):
            for _, fields in await raw.xrange(key) or []:
                if fields and PASSWORD.encode() in fields[b"__data__"]:
                    found.append(key)
        for stream in ("auth.register", "auth.login"):
            assert await raw.xlen(system.stream(stream)) == 0
            groups = await raw.xinfo_groups(system.stream(stream))
            assert [int(g["pending"]) for g in groups] == [0]
    finally:
        await raw.aclose()
    assert found == []


async def test_a_malformed_secret_command_is_deleted_and_its_password_never_logged(
    system: System, log_records: list[Any]
) -> None:
    secret = "never-log-this-1"
    message = {
        "id": "bad-1",
        "type": "RegisterUser",
        "producer": "gateway",
        "payload": {"email": "nope", "password": secret},
    }
    entry = signed(message)
    raw = Redis.from_url(REDIS_URL)
    stream = system.stream("auth.register")
    try:
        await raw.xadd(stream, {"__data__": entry})

        async def handled() -> bool:
            groups = await raw.xinfo_groups(stream)
            return await raw.xlen(stream) == 0 and all(int(g["pending"]) == 0 for g in groups)

        await eventually(handled, what="the bad entry to be handled and deleted")
    finally:
        await raw.aclose()
    assert not [r for r in log_records if secret in str(r["message"]) or secret in str(r["exception"])]


async def test_two_relays_never_publish_one_outbox_out_of_order(redis_url: str) -> None:
    """PostgreSQL, where several instances of a service share one outbox. (SQLite runs
    one instance per service: its relays do not share a database.)"""
    async with postgres_databases() as databases, run_system(databases, redis_url=redis_url) as system:
        await system.services["users"].stop()  # only the relays of this test publish
        sessions = system.sessions("users")
        trace = Trace(correlation_id="corr-order")
        async with sessions() as session, session.begin():
            rows = [
                add_event(
                    session,
                    UsersOutbox,
                    "events.order",
                    UserUpdated(user_id="u-order", changes={"v": str(i)}),
                    trace=trace,
                    producer="users",
                )
                for i in range(40)
            ]
        store = SqlOutboxStore(sessions, UsersOutbox)
        # While one relay holds a batch, another gets nothing (not the next batch, which
        # it could publish first).
        async with store.claim(3) as first, store.claim(3) as second:
            assert first is not None
            assert [entry[1]["id"] for entry in first] == [row.id for row in rows[:3]]
            assert second is None
        relays = [OutboxRelay(store, system.bus, signer=signer_as("users"), batch_size=3) for _ in range(3)]
        try:
            await asyncio.gather(*(relay.drain() for relay in relays))
            while any([await relay.drain() for relay in relays]):
                pass
        finally:
            await asyncio.gather(*(relay.stop() for relay in relays))
        entries = await read_plain(REDIS_URL, system.stream("events.order"))
        # The first batch was claimed (and so marked published) by hand above.
        assert [e["id"] for e in entries] == [row.id for row in rows[3:]]


async def test_a_relay_that_found_the_outbox_held_publishes_once_it_is_free(redis_url: str) -> None:
    """Another instance's relay held the outbox when this one was woken: it looks again soon,
    not only at its next interval (which this test puts out of reach)."""
    async with postgres_databases() as databases, run_system(databases, redis_url=redis_url) as system:
        await system.services["users"].stop()  # only the relay of this test publishes
        sessions = system.sessions("users")
        store = SqlOutboxStore(sessions, UsersOutbox)
        relay = OutboxRelay(store, system.bus, signer=signer_as("users"), interval=60)
        await relay.start()
        try:
            async with store.claim(10) as held:  # the other instance's relay, mid-drain
                assert held is not None
                row = await commit_event(sessions, "contended")
                relay.wake()
                await asyncio.sleep(0.2)  # woken while the outbox is held: it publishes nothing yet
                assert await read_plain(REDIS_URL, system.stream("events.contended")) == []

            async def published() -> list[dict[str, Any]] | None:
                return await read_plain(REDIS_URL, system.stream("events.contended")) or None

            entries = await eventually(published, timeout=5, what="the event, published once the outbox is free")
            assert [e["id"] for e in entries] == [row.id]
        finally:
            await relay.stop()


async def test_a_relay_whose_database_connection_was_cut_publishes_on_a_new_one() -> None:
    """The relay talks to asyncpg directly on PostgreSQL, on a connection of its own: one
    the server ended (a restart, a failover) is dropped, and the next claim opens another."""
    async with postgres_databases() as databases:
        engine = create_engine(databases.users_url, pool_size=1)
        sessions = session_factory(engine)
        store = SqlOutboxStore(sessions, UsersOutbox)
        try:
            async with store.claim(10) as entries:
                assert entries == []
            cut = store._pg
            admin = create_engine(POSTGRES_URL)
            try:
                async with admin.connect() as connection:
                    ended = await connection.execute(
                        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                        {"name": engine.url.database},
                    )
                    assert ended.scalars().all() == [True]
            finally:
                await admin.dispose()
            # If asyncpg has not heard of the termination yet, the first use fails (BEGIN on
            # a dead socket) and drops the connection; if it has, the claim opens a new one.
            with contextlib.suppress(
                OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError
            ):
                async with store.claim(10):
                    pass
            row = await commit_event(sessions, "cut")
            async with store.claim(10) as entries:
                assert entries is not None
                assert [entry[1]["id"] for entry in entries] == [row.id]
            assert cut is not None
            assert cut.is_closed()
            assert store._pg is not cut  # published on a new connection
        finally:
            await store.close()
            await engine.dispose()


async def test_a_relay_pass_that_failed_in_redis_keeps_its_database_connection() -> None:
    """An XADD failing (Redis down) is no reason to drop a healthy PostgreSQL connection."""
    async with postgres_databases() as databases:
        engine = create_engine(databases.users_url, pool_size=1)
        store = SqlOutboxStore(session_factory(engine), UsersOutbox)
        try:
            async with store.claim(10) as entries:
                assert entries == []
            before = store._pg
            assert before is not None
            with pytest.raises(ConnectionError):
                async with store.claim(10):
                    raise ConnectionError("Redis is down")  # what the relay's XADD raises then
            assert store._pg is before
            assert before is not None
            assert not before.is_closed()
            assert not before.is_in_transaction()  # rolled back: the lock let go
        finally:
            await store.close()
            await engine.dispose()


async def test_the_relay_claims_on_a_connection_of_its_own_and_closes_it() -> None:
    """Past SQLAlchemy's pool (a checkout per claim cost as much as BEGIN): the pool stays
    whole for the service's requests, and ``close`` (the relay's stop) ends the connection."""
    async with postgres_databases() as databases:
        engine = create_engine(databases.users_url, pool_size=1)
        sessions = session_factory(engine)
        store = SqlOutboxStore(sessions, UsersOutbox)
        try:
            row = await commit_event(sessions, "own")
            async with store.claim(10) as entries, engine.connect() as pooled:
                # The pool's only connection is free while a claim is under way.
                assert (await pooled.execute(text("SELECT 1"))).scalar() == 1
                assert entries is not None
                assert [entry[1]["id"] for entry in entries] == [row.id]
                # A second claim in this process while the first holds the outbox: held.
                async with store.claim(10) as second:
                    assert second is None
            own = store._pg
            assert own is not None
            await store.close()
            assert own.is_closed()
            async with store.claim(10) as again:  # opened again
                assert again == []
        finally:
            await store.close()
            await engine.dispose()


async def test_a_claim_on_postgresql_takes_three_round_trips_and_marks_what_it_gave() -> None:
    """BEGIN; the lock and the pick in one statement; the mark and COMMIT in one."""
    async with postgres_databases() as databases:
        engine = create_engine(databases.users_url, pool_size=1)
        sessions = session_factory(engine)
        store = SqlOutboxStore(sessions, UsersOutbox)
        sent: list[str] = []
        execute, fetch = asyncpg.Connection.execute, asyncpg.Connection.fetch

        async def counted_execute(connection: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(query)
            return await execute(connection, query, *args, **kwargs)

        async def counted_fetch(connection: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(query)
            return await fetch(connection, query, *args, **kwargs)

        try:
            rows = [await commit_event(sessions, f"trips-{n}") for n in range(2)]
            with (
                mock.patch.object(asyncpg.Connection, "execute", counted_execute),
                mock.patch.object(asyncpg.Connection, "fetch", counted_fetch),
            ):
                async with store.claim(10) as entries:
                    assert entries is not None
                    assert [entry[1]["id"] for entry in entries] == [row.id for row in rows]
            assert len(sent) == 3
            assert sent[0] == "BEGIN"
            assert sent[2].endswith("; COMMIT")
            # Marked without waiting for the disk: a mark lost in a crash only republishes.
            assert sent[2].startswith("SET LOCAL synchronous_commit TO OFF; UPDATE ")
            async with sessions() as session:
                stored = (
                    await session.exec(select(UsersOutbox).where(col(UsersOutbox.id).in_([r.id for r in rows])))
                ).all()
            assert all(row.published_at is not None for row in stored)
            async with store.claim(10) as again:
                assert again == []  # marked: not given again
        finally:
            await store.close()
            await engine.dispose()


async def test_a_claim_cancelled_while_publishing_leaves_the_outbox_free() -> None:
    """The relay stopped mid-pass (its XADD cancelled): nothing marked, the lock let go, the connection reusable."""
    async with postgres_databases() as databases:
        engine = create_engine(databases.users_url, pool_size=1)  # the next claim gets the same connection
        sessions = session_factory(engine)
        store = SqlOutboxStore(sessions, UsersOutbox)
        publishing = asyncio.Event()

        async def pass_cancelled_in_its_xadd() -> None:
            async with store.claim(10) as entries:
                assert entries
                publishing.set()
                await asyncio.sleep(30)  # the XADD that never ends: cancelled here

        try:
            row = await commit_event(sessions, "cancelled")
            relay = asyncio.create_task(pass_cancelled_in_its_xadd())
            await asyncio.wait_for(publishing.wait(), 5)
            relay.cancel()
            with pytest.raises(asyncio.CancelledError):
                await relay
            async with store.claim(10) as again:
                assert again is not None  # not "held by another relay"
                assert [entry[1]["id"] for entry in again] == [row.id]  # and not marked published
        finally:
            await store.close()
            await engine.dispose()
