"""The async test harness: the whole system in-process, on real Redis and real databases.

Use it to test busway, or your own subscriber next to it (docs/testing.md):

    async def test_mine(system: System) -> None:
        response = await system.http.post("/v1/auth/register", json={...})

Every ``System`` gets its own stream/key prefix, so tests never see each other's
messages; databases are made once per test session and backend (SQLite, PostgreSQL).
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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

from bus.broker import create_redis
from bus.runtime import ServiceRuntime
from bus.settings import BusSettings
from db.engine import SessionFactory, create_engine, session_factory
from db.migrations import upgrade_async
from db.provision import fresh_databases
from gateway.app import create_app as create_gateway
from gateway.resilience import Downstream
from gateway.settings import GatewaySettings
from gateway.state import gateway_of
from handlers.auth.keys import generate_pem
from handlers.auth.main import MIGRATIONS as AUTH_MIGRATIONS
from handlers.auth.main import create_app as create_auth
from handlers.auth.settings import AuthSettings
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS
from handlers.users.main import create_app as create_users
from handlers.users.settings import UsersSettings

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
SIGNING_KEY = generate_pem().decode()


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
    """Fresh, migrated SQLite files for both services."""
    databases = Databases("sqlite", f"sqlite+aiosqlite:///{folder}/users.db", f"sqlite+aiosqlite:///{folder}/auth.db")
    await upgrade_async(USERS_MIGRATIONS, databases.users_url)
    await upgrade_async(AUTH_MIGRATIONS, databases.auth_url)
    yield databases


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
    """Fresh, migrated PostgreSQL databases for both services; dropped afterwards."""
    problem = await postgres_available(admin_url)
    if problem is not None:
        unavailable(f"PostgreSQL at {admin_url} ({problem})")
    suffix = uuid.uuid4().hex[:8]
    async with fresh_databases(admin_url, [f"busway_test_users_{suffix}", f"busway_test_auth_{suffix}"]) as urls:
        databases = Databases("postgres", *urls)
        await upgrade_async(USERS_MIGRATIONS, databases.users_url)
        await upgrade_async(AUTH_MIGRATIONS, databases.auth_url)
        yield databases


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
    """A running busway: gateway, users and auth in this process, on one prefix."""

    prefix: str
    bus: BusSettings
    databases: Databases
    http: httpx.AsyncClient
    redis: Redis
    app: Litestar
    services: dict[str, ServiceRuntime]
    settings: dict[str, Any] = field(default_factory=dict)
    _engines: list[Any] = field(default_factory=list)

    async def restart(self, service: str) -> ServiceRuntime:
        """Start a new instance of ``service`` (after stopping it), as a redeploy would."""
        old = self.services[service]
        if old.broker.running:
            await old.stop()
        runtime = (
            create_users(self.settings[service], instance="users-test")
            if service == "users"
            else create_auth(self.settings[service], instance="auth-test")
        )
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
        """Scrape /metrics of the gateway, or over HTTP of a running ``users`` or ``auth``."""
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
        urls = {"users": self.databases.users_url, "auth": self.databases.auth_url}
        if service not in urls:
            msg = f"no database for {service!r}; choose from {sorted(urls)}"
            raise ValueError(msg)
        engine = create_engine(urls[service])
        self._engines.append(engine)
        return session_factory(engine)

    def stream(self, base: str) -> str:
        """A stream name with this system's prefix."""
        return self.bus.name(base)


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


@asynccontextmanager
async def run_system(
    databases: Databases, *, redis_url: str = REDIS_URL, **gateway_options: Any
) -> AsyncIterator[System]:
    """Start auth, users and the gateway in this process; stop them all afterwards."""
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
    services = {
        "auth": create_auth(auth_settings, instance="auth-test"),
        "users": create_users(users_settings, instance="users-test"),
    }
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
            system = System(
                prefix, bus, databases, http, redis, app, services, {"users": users_settings, "auth": auth_settings}
            )
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
