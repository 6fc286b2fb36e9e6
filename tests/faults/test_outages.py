"""Redis and PostgreSQL restarted mid-load: 503s during the outage, recovery without restarting
our services, and no acknowledged work lost."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults.cluster import Cluster, registration_body, running_cluster
from tests.faults.servers import PostgresServer, RedisServer
from tests.harness import eventually

pytestmark = [pytest.mark.faults]

HANG = 15.0
"""Seconds after which a request counts as hung (the bus timeout is 10 s)."""


@dataclass
class Load:
    """Registrations sent continuously, each answer kept with the time it came."""

    answers: list[tuple[float, str, int]] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)

    def after(self, moment: float) -> list[int]:
        """Status codes of requests that finished after ``moment``."""
        return [status for at, _, status in self.answers if at > moment]

    def accepted(self) -> set[str]:
        """Emails whose registration was accepted (201 or 202)."""
        return {email for _, email, status in self.answers if status in (201, 202)}


async def _register_forever(http: httpx.AsyncClient, load: Load, stop: asyncio.Event) -> None:
    while not stop.is_set():
        body = registration_body("outage")
        try:
            response = await http.post("/v1/auth/register", json=body)
        except httpx.TimeoutException:
            load.hung.append(body["email"])
            continue
        load.answers.append((time.monotonic(), body["email"], response.status_code))
        if response.status_code >= 500:
            await asyncio.sleep(0.05)  # a client backing off, not a spin


async def _with_outage(cluster: Cluster, outage: Callable[[], Awaitable[None]]) -> Load:
    """Run the load, inject ``outage``, keep loading until registrations succeed again."""
    load, stop = Load(), asyncio.Event()
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=HANG) as http:
        workers = [asyncio.create_task(_register_forever(http, load, stop)) for _ in range(4)]
        await asyncio.sleep(2)
        await outage()
        back = time.monotonic()

        async def recovered() -> bool:
            return load.after(back).count(201) + load.after(back).count(202) >= 5

        try:
            await eventually(recovered, timeout=60, what="registrations to succeed after the outage")
        finally:
            stop.set()
            await asyncio.gather(*workers)
    return load


async def _assert_nothing_lost(cluster: Cluster, load: Load) -> None:
    assert not load.hung, f"{len(load.hung)} requests hung instead of failing fast"
    statuses = {status for _, _, status in load.answers}
    assert statuses <= {201, 202, 503}, statuses

    async def settled() -> bool:
        rows = await cluster.query("auth", "SELECT count(*) FROM registrations WHERE state = 'pending'")
        return bool(rows[0][0] == 0)

    await eventually(settled, timeout=60, what="every registration to finish")
    registrations = await cluster.query("auth", "SELECT user_id, state, email FROM registrations")
    # Every accepted registration exists (a 503 may or may not have begun one: both are fine).
    assert load.accepted() <= {email for _, _, email in registrations}
    completed = {user_id for user_id, state, _ in registrations if state == "completed"}
    profiles = [row[0] for row in await cluster.query("users", "SELECT id FROM profiles")]
    assert len(profiles) == len(set(profiles))
    assert set(profiles) == completed
    credentials = await cluster.query("auth", "SELECT user_id, status FROM credentials")
    assert {user_id for user_id, _ in credentials} == completed
    assert {status for _, status in credentials} <= {"active"}


async def test_redis_restart_mid_load(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        async with running_cluster(tmp_path, redis_url=server.url) as cluster:

            async def restart_redis() -> None:
                server.stop()
                await asyncio.sleep(2)
                server.start()

            load = await _with_outage(cluster, restart_redis)
            assert 503 in {status for _, _, status in load.answers}, "the outage went unnoticed"
            await _assert_nothing_lost(cluster, load)
            for service in ("users", "auth", "gateway"):  # recovered by themselves
                assert all(p.poll() is None for p in cluster.processes[service]), f"{service} exited"
    finally:
        server.stop()


async def test_postgres_restart_mid_load(tmp_path: Path, redis_url: str) -> None:
    server = PostgresServer()
    try:
        server.init()
        server.start()
        async with running_cluster(tmp_path, redis_url=redis_url, admin_url=server.admin_url) as cluster:

            async def restart_postgres() -> None:
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(2)
                await asyncio.to_thread(server.start)

            load = await _with_outage(cluster, restart_postgres)
            assert 503 in {status for _, _, status in load.answers}, "the outage went unnoticed"
            await _assert_nothing_lost(cluster, load)
            for service in ("users", "auth", "gateway"):
                assert all(p.poll() is None for p in cluster.processes[service]), f"{service} exited"
    finally:
        server.remove()


async def test_redis_losing_its_data_recreates_the_groups(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        async with running_cluster(tmp_path, redis_url=server.url) as cluster:
            async with httpx.AsyncClient(base_url=cluster.base_url, timeout=HANG) as http:
                first = await http.post("/v1/auth/register", json=registration_body("before"))
                assert first.status_code == 201, first.text
                raw = Redis.from_url(server.url)
                try:
                    await raw.flushall()  # streams, groups, pending entries: all gone
                finally:
                    await raw.aclose()

                async def registers_again() -> bool:
                    response = await http.post("/v1/auth/register", json=registration_body("after"))
                    return response.status_code == 201

                await eventually(registers_again, timeout=30, what="registrations to work after the data loss")
            for service in ("users", "auth"):
                assert "recreating the groups" in cluster.log_of(service)
                assert all(p.poll() is None for p in cluster.processes[service]), f"{service} exited"
    finally:
        server.stop()
