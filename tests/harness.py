"""The async test harness: the whole system in-process, on real Redis and real databases.

Use it to test busway, or your own subscriber next to it (docs/testing.md):

    async def test_mine(system: System) -> None:
        response = await system.http.post("/v1/auth/register", json={...})

Every ``System`` gets its own stream/key prefix, so tests never see each other's
messages; databases are made once per test session and backend (SQLite, PostgreSQL).
"""

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from bus import wire
from bus.broker import create_redis
from bus.runtime import ServiceRuntime
from bus.settings import BusSettings
from bus.signing import Signer, development_key
from db.engine import SessionFactory, create_engine, session_factory
from db.migrations import upgrade_async
from db.provision import fresh_databases
from gateway.app import create_app as create_gateway
from gateway.resilience import Downstream
from gateway.settings import GatewaySettings
from gateway.state import gateway_of
from handlers.activity.main import MIGRATIONS as ACTIVITY_MIGRATIONS
from handlers.activity.main import create_app as create_activity
from handlers.activity.settings import ActivitySettings
from handlers.auth.keys import generate_pem
from handlers.auth.main import MIGRATIONS as AUTH_MIGRATIONS
from handlers.auth.main import create_app as create_auth
from handlers.auth.settings import AuthSettings
from handlers.mailer.main import create_app as create_mailer
from handlers.mailer.settings import MailerSettings
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS
from handlers.users.main import create_app as create_users
from handlers.users.settings import UsersSettings

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
SIGNING_KEY = generate_pem().decode()


def signer_as(producer: str) -> Signer:
    """What signs as ``producer`` in tests: its development key, which every test system trusts."""
    return Signer(producer, development_key(producer))


def signed(message: dict[str, Any], producer: str | None = None) -> bytes:
    """``message`` (an envelope as a dict, ``payload`` included) as wire bytes signed by its producer.

    For tests that write raw entries: busway refuses unsigned ones. ``producer`` overrides
    the message's own.
    """
    headers: dict[str, Any] = {key: value for key, value in message.items() if key not in {"headers", "payload"}}
    headers.update(message.get("headers") or {})
    if producer is not None:
        headers["producer"] = producer
    payload = json.dumps(message.get("payload")).encode()
    return wire.encode(headers, payload, signer=signer_as(str(headers.get("producer", ""))))


def unavailable(what: str) -> None:
    """A service the tests need is missing: a failure in CI, a skip on a laptop."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} is not available")


@dataclass(frozen=True)
class Databases:
    """One database per service, migrated."""

    backend: str
    users_url: str
    auth_url: str
    activity_url: str


async def redis_available(url: str = REDIS_URL) -> bool:
    """Whether a Redis server answers at ``url``."""
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except (OSError, ConnectionError, TimeoutError) as exc:
        del exc
        return False
    except Exception:  # redis-py wraps connection failures in its own errors
        return False
    finally:
        await client.aclose()


@asynccontextmanager
async def sqlite_databases(folder: Path) -> AsyncIterator[Databases]:
    """Fresh, migrated SQLite files for every service with a database."""
    databases = Databases("sqlite", *(f"sqlite+aiosqlite:///{folder}/{name}.db" for name in SERVICE_DATABASES))
    await _migrate(databases)
    yield databases


SERVICE_DATABASES = ("users", "auth", "activity")
"""The services with a database, in the order of ``Databases``' URL fields."""


async def _migrate(databases: Databases) -> None:
    await upgrade_async(USERS_MIGRATIONS, databases.users_url)
    await upgrade_async(AUTH_MIGRATIONS, databases.auth_url)
    await upgrade_async(ACTIVITY_MIGRATIONS, databases.activity_url)


async def postgres_available(admin_url: str = POSTGRES_URL) -> str | None:
    """None when PostgreSQL answers at ``admin_url``, else why not."""
    try:
        connection = await asyncpg.connect(
            make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False), timeout=5
        )
    except (OSError, asyncpg.PostgresError) as exc:
        return str(exc)
    await connection.close()
    return None


@asynccontextmanager
async def postgres_databases(admin_url: str = POSTGRES_URL) -> AsyncIterator[Databases]:
    """Fresh, migrated PostgreSQL databases for every service; dropped afterwards."""
    problem = await postgres_available(admin_url)
    if problem is not None:
        unavailable(f"PostgreSQL at {admin_url} ({problem})")
    suffix = uuid.uuid4().hex[:8]
    names = [f"busway_test_{service}_{suffix}" for service in SERVICE_DATABASES]
    async with fresh_databases(admin_url, names) as urls:
        databases = Databases("postgres", *urls)
        await _migrate(databases)
        yield databases


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


OPTIONAL_SERVICES = ("activity", "mailer")
"""Services ``run_system(include=...)`` can add to users, auth and the gateway."""


def _create(service: str, settings: Any) -> ServiceRuntime:
    """A new instance of ``service``, named ``<service>-test``."""
    factories: dict[str, Callable[..., ServiceRuntime]] = {
        "users": create_users,
        "auth": create_auth,
        "activity": create_activity,
        "mailer": create_mailer,
    }
    return factories[service](settings, instance=f"{service}-test")


@dataclass(frozen=True)
class Scrape:
    """One read of a /metrics endpoint, parsed as Prometheus text (a parse error fails the test)."""

    text: str

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; 0 when it has not been counted yet."""
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def names(self) -> set[str]:
        """Every sample name in the text."""
        return {sample.name for family in text_string_to_metric_families(self.text) for sample in family.samples}


@dataclass
class System:
    """A running busway: gateway, users, auth (and any services included) in this process, on one prefix."""

    prefix: str
    bus: BusSettings
    databases: Databases
    http: httpx.AsyncClient
    redis: Redis
    app: Litestar
    services: dict[str, ServiceRuntime]
    settings: dict[str, Any] = field(default_factory=dict)
    mail_dir: Path | None = None
    _engines: list[Any] = field(default_factory=list)

    async def restart(self, service: str) -> ServiceRuntime:
        """Start a new instance of ``service`` (after stopping it), as a redeploy would."""
        old = self.services[service]
        if old.broker.running:
            await old.stop()
        runtime = _create(service, self.settings[service])
        await runtime.start()
        self.services[service] = runtime
        return runtime

    async def stop(self, service: str) -> None:
        """Take ``service`` down gracefully (``restart`` brings it back)."""
        runtime = self.services[service]
        if runtime.broker.running:
            await runtime.stop()

    def downstream(self, service: str) -> Downstream:
        """The gateway's breaker, bulkhead and retry policy for ``service``."""
        return gateway_of(self.app.state).downstreams.service(service)

    async def metrics(self, service: str) -> Scrape:
        """Scrape /metrics of the gateway, or over HTTP of a running handler service (any in ``services``)."""
        if service == "gateway":
            response = await self.http.get("/metrics")
        else:
            exporter = self.services[service].metrics
            port = exporter.port if exporter is not None else None
            if port is None:
                msg = f"{service} serves no metrics (is it running?)"
                raise ValueError(msg)
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        return Scrape(response.text)

    def sessions(self, service: str) -> SessionFactory:
        """A session factory on ``service``'s database, for assertions and set-up."""
        urls = {
            "users": self.databases.users_url,
            "auth": self.databases.auth_url,
            "activity": self.databases.activity_url,
        }
        if service not in urls:
            msg = f"no database for {service!r}; choose from {sorted(urls)}"
            raise ValueError(msg)
        engine = create_engine(urls[service])
        self._engines.append(engine)
        return session_factory(engine)

    def stream(self, base: str) -> str:
        """A stream name with this system's prefix."""
        return self.bus.name(base)

    async def deliver_again(self, base: str, event_id: str) -> str:
        """Append the entry of event ``event_id`` to stream ``base`` once more; the new entry's id.

        Every group reads it as a second delivery of that event (the same event id), as
        after a crash between handling and acknowledging it, or a replay.
        """
        stream = self.stream(base)
        entries: list[Any] = await self.redis.xrange(stream) or []
        for _, fields in entries:
            data = fields[wire.DATA_FIELD.encode()]
            if json.loads(data).get("id") == event_id:
                return _text(await self.redis.xadd(stream, {wire.DATA_FIELD: data}))
        msg = f"no event {event_id} on {stream}"
        raise LookupError(msg)

    async def caught_up(self, group: str, base: str) -> bool:
        """Whether ``group`` has read every entry of stream ``base`` and acknowledged them all."""
        stream = self.stream(base)
        last: list[Any] = await self.redis.xrevrange(stream, count=1) or []
        newest = _text(last[0][0]) if last else "0-0"
        groups: list[dict[Any, Any]] = await self.redis.xinfo_groups(stream)
        for info in groups:
            if _text(info["name"]) == group:
                return _text(info["last-delivered-id"]) == newest and int(info["pending"]) == 0
        return False

    def mails(self) -> list[EmailMessage]:
        """The mails the mailer has written so far, oldest first (with ``include=("mailer",)``)."""
        if self.mail_dir is None:
            msg = "the mailer is not running: run_system(..., include=['mailer'])"
            raise ValueError(msg)
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(path.read_bytes()) for path in sorted(self.mail_dir.glob("*.eml"))]


def settings_for(
    databases: Databases, bus: BusSettings, **gateway_options: Any
) -> tuple[UsersSettings, AuthSettings, GatewaySettings]:
    """Settings for an in-process system: test environment, fast hashing, a fixed key, metrics on free ports."""
    users = UsersSettings(
        environment="test", database_url=databases.users_url, migrate_on_start=False, metrics_port=0, bus=bus
    )
    auth = AuthSettings(
        environment="test",
        database_url=databases.auth_url,
        migrate_on_start=False,
        metrics_port=0,
        signing_key=SecretStr(SIGNING_KEY),
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
        bus=bus,
    )
    return users, auth, GatewaySettings(environment="test", bus=bus, **gateway_options)


def optional_settings(service: str, databases: Databases, bus: BusSettings, mail_dir: Path) -> Any:
    """Settings for one of OPTIONAL_SERVICES in an in-process system, metrics on a free port."""
    if service == "activity":
        return ActivitySettings(
            environment="test", database_url=databases.activity_url, migrate_on_start=False, metrics_port=0, bus=bus
        )
    if service == "mailer":
        return MailerSettings(environment="test", outbox_dir=mail_dir, metrics_port=0, bus=bus)
    msg = f"unknown service {service!r}; choose from {', '.join(OPTIONAL_SERVICES)}"
    raise ValueError(msg)


@asynccontextmanager
async def run_system(
    databases: Databases,
    *,
    redis_url: str = REDIS_URL,
    include: Collection[str] = (),
    **gateway_options: Any,
) -> AsyncIterator[System]:
    """Start auth, users, the services in ``include`` and the gateway in this process; stop them all afterwards.

    ``include``: any of ``"activity"`` and ``"mailer"`` (the mailer writes to a temporary
    folder, ``System.mail_dir``). Keyword arguments left go to ``GatewaySettings``.
    """
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    bus = BusSettings(
        redis_url=redis_url,
        prefix=prefix,
        polling_interval_ms=200,
        heartbeat_interval=0.5,
        claim_idle_ms=500,
        max_deliveries=3,
    )
    users_settings, auth_settings, gateway_settings = settings_for(databases, bus, **gateway_options)
    settings: dict[str, Any] = {"auth": auth_settings, "users": users_settings}
    mail_dir = Path(tempfile.mkdtemp(prefix="busway-mail-")) if "mailer" in include else None
    for service in include:
        settings[service] = optional_settings(service, databases, bus, mail_dir or Path())
    services = {service: _create(service, service_settings) for service, service_settings in settings.items()}
    app = create_gateway(gateway_settings, instance=f"gateway-{prefix}")
    redis = create_redis(bus)
    # The gateway's lifespan hooks, called directly: Litestar's lifespan runs an anyio task
    # group that pytest-asyncio may enter and exit from different tasks.
    gateway = gateway_of(app.state)
    system: System | None = None
    try:
        for runtime in services.values():
            await runtime.start()
        await gateway.start()
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            system = System(prefix, bus, databases, http, redis, app, services, settings, mail_dir)
            yield system
    finally:
        await gateway.stop()
        for runtime in (system.services if system else services).values():
            if runtime.broker.running:
                await runtime.stop()
        if system is not None:
            for engine in system._engines:
                await engine.dispose()
        await _delete_prefix(redis, prefix)
        await redis.aclose()
        if mail_dir is not None:
            shutil.rmtree(mail_dir, ignore_errors=True)


async def _delete_prefix(redis: Redis, prefix: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)
