"""Least privilege in the stores: each service's Redis user and PostgreSQL role reach only its own data.

Redis: a redis-server of the test's own loads the ACL file ``python -m bus.acl`` generates.
PostgreSQL: the roles and databases ``deploy/postgres/init.sql`` creates, made on the local
server under throwaway names and dropped afterwards.
"""

import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from sqlalchemy.engine import make_url

from bus.acl import HANDLER_COMMANDS, acl_file
from bus.rpc import BusClient
from bus.settings import BusSettings
from handlers.users.main import create_app as create_users
from handlers.users.settings import UsersSettings
from schemas import streams
from schemas.commands import GetUser, Ping
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Pong, UserProfile
from tests.faults.servers import RedisServer
from tests.harness import POSTGRES_URL, postgres_available, sqlite_databases, unavailable
from tests.integration.test_rpc import SKIP, commands_in, recorded_writes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "lp:"
PASSWORDS = {"users": "users-secret", "auth": "auth-secret", "activity": "a", "mailer": "m", "gateway": "g"}


@pytest.fixture(params=["as generated"])
def acl_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    acl = tmp_path / "users.acl"
    rules = acl_file(PREFIX, PASSWORDS, "admin-secret")
    if request.param == "without CLIENT REPLY":  # an ACL of an older busway's, say
        rules = rules.replace(" +client|reply", "")
    acl.write_text(rules)
    server = RedisServer(tmp_path / "redis", options=["--aclfile", str(acl)])
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def as_user(acl_redis: RedisServer) -> AsyncIterator[dict[str, Redis]]:
    clients = {
        user: Redis(port=acl_redis.port, username=user, password=password)
        for user, password in {**PASSWORDS, "admin": "admin-secret"}.items()
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def test_the_users_service_reads_its_own_streams_and_not_auths(as_user: dict[str, Redis]) -> None:
    users, admin = as_user["users"], as_user["admin"]
    await admin.xadd(f"{PREFIX}auth.login", {"__data__": "a password"})
    await admin.xadd(f"{PREFIX}events.auth", {"__data__": "{}"})

    # Its own: a command stream and the events it consumes, as its group; its own events out.
    await admin.xadd(f"{PREFIX}users.get", {"__data__": "{}"})
    for stream in (f"{PREFIX}users.get", f"{PREFIX}events.auth"):
        await users.xgroup_create(stream, "users", id="0", mkstream=True)
        read: Any = await users.xreadgroup("users", "users-1", {stream: ">"}, count=10)
        [[_, entries]] = read
        assert entries
        assert await users.xack(stream, "users", *[entry_id for entry_id, _ in entries]) == len(entries)
    assert await users.xadd(f"{PREFIX}events.users", {"__data__": "{}"})
    assert await users.set(f"{PREFIX}heartbeat.users.users-1", "1")
    await users.publish(f"{PREFIX}inbox.gateway-1", b"reply")

    # auth's: nothing.
    await admin.xgroup_create(f"{PREFIX}auth.login", "auth", id="0")
    for attempt in (
        users.xrange(f"{PREFIX}auth.login"),
        users.xreadgroup("auth", "users-1", {f"{PREFIX}auth.login": ">"}),
        users.xgroup_create(f"{PREFIX}auth.login", "users", id="0"),
        users.xadd(f"{PREFIX}events.users.forged", {"__data__": "{}"}),
        users.set(f"{PREFIX}revoked.some-session", "1"),
        users.get(f"{PREFIX}heartbeat.auth.auth-1"),
        users.xadd("auth.login", {"__data__": "{}"}),  # another deployment's (no prefix)
    ):
        with pytest.raises(NoPermissionError):
            await attempt
    with pytest.raises(NoPermissionError):
        await users.flushall()


async def test_the_gateway_sends_commands_but_cannot_read_them(as_user: dict[str, Redis]) -> None:
    gateway = as_user["gateway"]
    assert await gateway.xadd(f"{PREFIX}auth.login", {"__data__": "{}"})
    assert await gateway.xadd(f"{PREFIX}users.get", {"__data__": "{}"})
    for attempt in (
        gateway.xrange(f"{PREFIX}auth.login"),
        gateway.xadd(f"{PREFIX}events.auth", {"__data__": "{}"}),  # no forging events
        gateway.publish(f"{PREFIX}inbox.gateway-1", b"x"),  # nor replies
    ):
        with pytest.raises(NoPermissionError):
            await attempt


async def test_the_default_user_may_only_ping(acl_redis: RedisServer) -> None:
    anonymous = Redis(port=acl_redis.port)
    try:
        assert await anonymous.ping()
        with pytest.raises(NoPermissionError):
            await anonymous.get("anything")
    finally:
        await anonymous.aclose()


@pytest.mark.parametrize(
    ("acl_redis", "skips"), [("as generated", True), ("without CLIENT REPLY", False)], indirect=["acl_redis"]
)
async def test_users_and_a_gateway_work_under_their_own_redis_users(
    acl_redis: RedisServer, skips: bool, tmp_path: Path
) -> None:
    """Without CLIENT REPLY the acks and replies sent with the next read wait for replies instead."""

    def bus(user: str) -> BusSettings:
        url = f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{acl_redis.port}/0"
        return BusSettings(redis_url=url, prefix=PREFIX, polling_interval_ms=100, _env_file=None)

    async with sqlite_databases(tmp_path) as databases:
        settings = UsersSettings(
            environment="test", database_url=databases.users_url, migrate_on_start=False, bus=bus("users")
        )
        users = create_users(settings, instance="users-acl")
        gateway_bus = bus("gateway")
        client = BusClient(gateway_bus, "gateway-acl", producer="gateway")
        with recorded_writes() as writes:
            await users.start()
            try:
                await client.start()
                assert await client.request(streams.USERS_PING, Ping(), Pong) == Pong(service="users")
                with pytest.raises(ReplyError) as missing:
                    await client.request(streams.USERS_GET, GetUser(user_id="nobody"), UserProfile)
                assert missing.value.reply.code == ErrorCode.NOT_FOUND
            finally:
                await client.stop()
                await users.stop()
    # The ping's reply, ready at once, goes with the next read: without replies if Redis lets it.
    [ping] = [commands_in(write) for _, write in writes if b"PUBLISH" in write and b"XREADGROUP" in write]
    assert ping == ([SKIP, b"PUBLISH", SKIP, b"XACK", b"XREADGROUP"] if skips else [b"PUBLISH", b"XACK", b"XREADGROUP"])


async def test_a_handler_keeps_answering_when_client_reply_is_refused_after_it_connected(
    acl_redis: RedisServer, as_user: dict[str, Redis], tmp_path: Path
) -> None:
    """An ACL changed under a running service: the replies on its read connections would fall out
    of step (the skipped commands now answer). The read notices, the connection is replaced,
    and the new one waits for replies instead. A command the dropped read had taken is not
    lost: it is pending, and the claimer hands it out again (after 300 ms here)."""
    url = f"redis://users:{PASSWORDS['users']}@127.0.0.1:{acl_redis.port}/0"
    gateway_url = f"redis://gateway:{PASSWORDS['gateway']}@127.0.0.1:{acl_redis.port}/0"
    settings = BusSettings(redis_url=url, prefix=PREFIX, polling_interval_ms=100, claim_idle_ms=300, _env_file=None)
    async with sqlite_databases(tmp_path) as databases:
        users = create_users(
            UsersSettings(environment="test", database_url=databases.users_url, migrate_on_start=False, bus=settings),
            instance="users-acl-change",
        )
        gateway_bus = BusSettings(redis_url=gateway_url, prefix=PREFIX, polling_interval_ms=100, _env_file=None)
        client = BusClient(gateway_bus, "gateway-acl-change", producer="gateway")
        with recorded_writes() as writes:
            await users.start()
            try:
                await client.start()
                assert await client.request(streams.USERS_PING, Ping(), Pong, timeout=5) == Pong(service="users")
                rules = [command for command in HANDLER_COMMANDS if command != "+client|reply"]
                await as_user["admin"].execute_command("ACL", "SETUSER", "users", "nocommands", *rules)  # type: ignore[no-untyped-call]
                for _ in range(4):
                    assert await client.request(streams.USERS_PING, Ping(), Pong, timeout=5) == Pong(service="users")
            finally:
                await client.stop()
                await users.stop()
    # The read connection was replaced, and the new one waits for replies: the last answer
    # goes with the next read again, without CLIENT REPLY SKIP.
    answers = [commands_in(write) for _, write in writes if b"PUBLISH" in write]
    assert answers[0] == [SKIP, b"PUBLISH", SKIP, b"XACK", b"XREADGROUP"]
    assert answers[-1] == [b"PUBLISH", b"XACK", b"XREADGROUP"]


def test_the_acl_template_in_deploy_is_what_the_generator_makes() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "bus.acl"], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT
    ).stdout
    assert (ROOT / "deploy" / "redis" / "users.acl.template").read_text() == generated


# PostgreSQL roles ---------------------------------------------------------------------------


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def test_a_service_role_cannot_connect_to_another_services_database() -> None:
    problem = await postgres_available(POSTGRES_URL)
    if problem is not None:
        unavailable(f"PostgreSQL at {POSTGRES_URL} ({problem})")
    suffix = uuid.uuid4().hex[:8]
    services = ("users", "auth", "activity")
    # init.sql as written, on throwaway names: the same statements, the same privileges.
    sql = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    for service in services:
        sql = re.sub(rf"\b{service}\b", f"lp_{service}_{suffix}", sql)
    admin = await asyncpg.connect(_plain(POSTGRES_URL))
    try:
        for statement in (part.strip() for part in re.sub(r"--[^\n]*", "", sql).split(";")):
            if statement:
                await admin.execute(statement)
        server = make_url(POSTGRES_URL)
        for service in services:
            role = f"lp_{service}_{suffix}"
            own = await asyncpg.connect(host=server.host, port=server.port, user=role, database=role)
            try:
                assert await own.fetchval("select current_user") == role
                await own.execute("create table mine (id int)")  # it owns its database
            finally:
                await own.close()
            for other in services:
                if other == service:
                    continue
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
                    await asyncpg.connect(
                        host=server.host, port=server.port, user=role, database=f"lp_{other}_{suffix}"
                    )
    finally:
        for service in services:
            name = f"lp_{service}_{suffix}"
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()
