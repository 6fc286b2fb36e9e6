"""busway as real processes, for fault tests: handlers can be killed, stopped and started.

Unlike ``tests.harness.run_system`` (everything in the test's process), each service here
is its own ``python -m ...`` process, exactly as ``busway up`` or compose runs it, so a
SIGKILL or SIGTERM is the real thing.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text

from db.engine import create_engine
from db.migrations import upgrade_async
from db.provision import fresh_databases
from handlers.auth.main import MIGRATIONS as AUTH_MIGRATIONS
from handlers.users.main import MIGRATIONS as USERS_MIGRATIONS
from tests.faults.servers import free_port
from tests.harness import POSTGRES_URL, REDIS_URL, SIGNING_KEY

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"users": "handlers.users", "auth": "handlers.auth", "gateway": "gateway"}
PASSWORD = "correct horse battery staple"


@dataclass
class Cluster:
    """Running service processes on one Redis prefix and their own PostgreSQL databases."""

    env: dict[str, str]
    prefix: str
    users_url: str
    auth_url: str
    logs: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The gateway's address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, service: str) -> subprocess.Popen[bytes]:
        """Start one more process of ``service``."""
        instances = self.processes.setdefault(service, [])
        argv = [sys.executable, "-m", MODULES[service]] + ([] if service == "gateway" else ["serve"])
        env = {**self.env, "GATEWAY_PORT": str(self.port)}
        with (self.logs / f"{service}-{len(instances)}.log").open("ab") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        instances.append(process)
        return process

    def signal(self, service: str, index: int, signum: signal.Signals) -> subprocess.Popen[bytes]:
        """Send ``signum`` to one process of ``service``."""
        process = self.processes[service][index]
        process.send_signal(signum)
        return process

    def stop_all(self) -> None:
        """SIGTERM every process, then SIGKILL what is left after a grace period."""
        alive = [p for group in self.processes.values() for p in group if p.poll() is None]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + 20
        for process in alive:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_of(self, service: str, index: int = 0) -> str:
        """What one process wrote so far."""
        return (self.logs / f"{service}-{index}.log").read_text(errors="replace")

    def stream(self, base: str) -> str:
        """A stream name under this cluster's prefix."""
        return self.prefix + base

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the gateway says every service has a live instance."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while time.monotonic() < deadline:
                for service, group in self.processes.items():
                    for index, process in enumerate(group):
                        if process.returncode is None and process.poll() is not None:
                            raise RuntimeError(f"{service} exited early:\n{self.log_of(service, index)[-3000:]}")
                try:
                    if (await http.get("/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log_of('gateway')[-3000:]}")

    async def query(self, service: str, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on ``service``'s database."""
        engine = create_engine(self.users_url if service == "users" else self.auth_url)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in (await connection.execute(text(sql))).all()]
        finally:
            await engine.dispose()


@asynccontextmanager
async def running_cluster(
    tmp: Path,
    *,
    redis_url: str = REDIS_URL,
    admin_url: str = POSTGRES_URL,
    services: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """Fresh databases, then ``services`` (name -> process count) started and ready; ``env`` adds settings."""
    prefix = f"faults-{uuid.uuid4().hex[:10]}:"
    suffix = uuid.uuid4().hex[:8]
    names = [f"busway_faults_users_{suffix}", f"busway_faults_auth_{suffix}"]
    async with fresh_databases(admin_url, names) as (users_url, auth_url):
        await upgrade_async(USERS_MIGRATIONS, users_url)
        await upgrade_async(AUTH_MIGRATIONS, auth_url)
        process_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BUSWAY_ENV": "test",
            "REDIS_URL": redis_url,
            "BUS_PREFIX": prefix,
            "BUS_CLAIM_IDLE_MS": "1000",
            "BUS_MAX_DELIVERIES": "3",
            "BUS_POLLING_INTERVAL_MS": "200",
            "BUS_HEARTBEAT_INTERVAL": "0.5",
            "BUS_REQUEST_TIMEOUT": "10",
            "LOG_LEVEL": "INFO",
            "USERS_DATABASE_URL": users_url,
            "AUTH_DATABASE_URL": auth_url,
            "USERS_MIGRATE_ON_START": "false",
            "AUTH_MIGRATE_ON_START": "false",
            "AUTH_SIGNING_KEY": SIGNING_KEY,
            "AUTH_ARGON2_TIME_COST": "1",
            "AUTH_ARGON2_MEMORY_COST": "1024",
            "GATEWAY_REGISTRATION_WAIT": "0.5",
            # Load from one client address: rate limits would answer it with 429s
            # (they are tested in tests/e2e/test_guard.py).
            "GATEWAY_RATE_LIMIT": "0",
            **(env or {}),
        }
        logs = tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(process_env, prefix, users_url, auth_url, logs)
        try:
            for service, count in (services or {"auth": 1, "users": 1, "gateway": 1}).items():
                for _ in range(count):
                    cluster.start(service)
            await cluster.wait_ready()
            yield cluster
        finally:
            cluster.stop_all()
            await _forget(redis_url, prefix)


async def _forget(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    except (OSError, RedisError):
        pass  # the test's own Redis is already gone
    finally:
        await client.aclose()


def registration_body(tag: str) -> dict[str, str]:
    """A valid registration with a unique email."""
    return {"email": f"{tag}-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD, "display_name": tag}
