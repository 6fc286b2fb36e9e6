"""A message that always fails goes to its dead letters; SIGTERM under load loses nothing."""

import asyncio
import signal
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults.cluster import PASSWORD, Cluster, registration_body, running_cluster
from tests.harness import eventually, signed

pytestmark = [pytest.mark.faults]


def poison_entry() -> dict[str, bytes]:
    """A RegistrationStarted whose payload breaks the contract: users fails on it every time."""
    envelope = {
        "id": uuid.uuid4().hex,
        "type": "RegistrationStarted",
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": "poison-" + uuid.uuid4().hex[:8],
        "producer": "auth",
        "headers": {},
        "payload": {"registration_id": "r-poison", "user_id": "u-poison"},
    }
    return {"__data__": signed(envelope)}


async def test_a_message_that_always_fails_is_dead_lettered_and_the_others_flow(tmp_path: Path, redis_url: str) -> None:
    async with running_cluster(tmp_path, redis_url=redis_url) as cluster:
        redis = Redis.from_url(redis_url)
        try:
            source = cluster.stream("events.auth")
            poison = poison_entry()
            poison_id = await redis.xadd(source, poison)  # type: ignore[arg-type]
            async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
                responses = await asyncio.gather(
                    *(http.post("/v1/auth/register", json=registration_body(f"flow{i}")) for i in range(5))
                )
            assert {r.status_code for r in responses} <= {201, 202}

            async def dead_letter() -> list[Any] | None:
                return await redis.xrange(cluster.stream("dlq.events.auth")) or None

            [(_, fields)] = await eventually(dead_letter, timeout=30, what="the dead letter")
            assert fields[b"source_id"] == poison_id
            assert fields[b"__data__"] == poison["__data__"]  # the original entry, intact
            assert int(fields[b"attempts"]) > 3  # BUS_MAX_DELIVERIES=3 deliveries failed first
            assert b"InvalidMessage" in fields[b"error"]
            assert fields[b"correlation_id"].startswith(b"poison-")

            async def acked() -> bool:
                return int((await redis.xpending(source, "users"))["pending"]) == 0

            await eventually(acked, what="the poison to be acked on its source")

            async def all_completed() -> bool:
                rows = await cluster.query("auth", "SELECT state FROM registrations")
                return len(rows) == 5 and {state for (state,) in rows} == {"completed"}

            await eventually(all_completed, timeout=30, what="the other registrations to complete")
        finally:
            await redis.aclose()


async def _account(http: httpx.AsyncClient) -> str:
    body = registration_body("term")
    created = await http.post("/v1/auth/register", json=body)
    assert created.status_code == 201, created.text
    login = await http.post("/v1/auth/login", json={"email": body["email"], "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


async def _load(http: httpx.AsyncClient, token: str, stop: asyncio.Event) -> list[int]:
    codes: list[int] = []
    headers = {"authorization": f"Bearer {token}"}
    while not stop.is_set():
        codes.append((await http.get("/v1/users/me", headers=headers)).status_code)
    return codes


async def _users_pending(redis: Redis, cluster: Cluster, consumer: str) -> int:
    total = 0
    for base in ("users.get", "users.update", "users.ping", "events.auth"):
        summary = await redis.xpending(cluster.stream(base), "users")
        total += sum(int(c["pending"]) for c in summary.get("consumers") or [] if c["name"].decode() == consumer)
    return total


async def test_sigterm_under_load_loses_no_request_and_leaves_nothing_unacked(tmp_path: Path, redis_url: str) -> None:
    two_users = {"auth": 1, "users": 2, "gateway": 1}
    async with running_cluster(tmp_path, redis_url=redis_url, services=two_users) as cluster:
        redis = Redis.from_url(redis_url)
        try:
            async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
                token = await _account(http)
                stop = asyncio.Event()
                workers = [asyncio.create_task(_load(http, token, stop)) for _ in range(8)]
                await asyncio.sleep(1.5)
                stopping = cluster.signal("users", 0, signal.SIGTERM)
                consumer = f"users-{socket.gethostname()}-{stopping.pid}"
                exit_code = await asyncio.to_thread(stopping.wait, 60)
                await asyncio.sleep(1.0)  # the survivor carries the load alone for a while
                stop.set()
                codes = [code for worker in workers for code in await worker]

            assert exit_code == 0, cluster.log_of("users", 0)[-2000:]
            assert "users stopped" in cluster.log_of("users", 0)
            assert len(codes) > 50, "too little load to prove anything"
            assert set(codes) == {200}, {code: codes.count(code) for code in set(codes)}

            async def nothing_left() -> bool:
                return await _users_pending(redis, cluster, consumer) == 0

            await eventually(nothing_left, timeout=10, what="the stopped consumer to hold no entry")
        finally:
            await redis.aclose()
