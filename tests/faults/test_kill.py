"""kill -9 of a users handler in the middle of a burst of registrations."""

import asyncio
import signal
import socket
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults.cluster import Cluster, registration_body, running_cluster
from tests.harness import eventually

pytestmark = [pytest.mark.faults]


async def _pending_of(redis: Redis, stream: str, group: str, consumer: str) -> int:
    summary = await redis.xpending(stream, group)
    return sum(int(c["pending"]) for c in summary.get("consumers") or [] if c["name"].decode() == consumer)


async def _freeze_holding_work(cluster: Cluster, redis: Redis, index: int) -> str:
    """SIGSTOP users #index at a moment it holds an unacknowledged entry; its consumer name."""
    process = cluster.processes["users"][index]
    consumer = f"users-{socket.gethostname()}-{process.pid}"
    stream = cluster.stream("events.auth")
    for _ in range(400):
        process.send_signal(signal.SIGSTOP)
        if await _pending_of(redis, stream, "users", consumer):
            return consumer
        process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.005)
    raise AssertionError("users never held an entry while registrations were running")


async def test_kill_9_mid_burst_leaves_every_registration_finished_once(tmp_path: Path, redis_url: str) -> None:
    two_users = {"auth": 1, "users": 2, "gateway": 1}
    async with running_cluster(tmp_path, redis_url=redis_url, services=two_users) as cluster:
        redis = Redis.from_url(redis_url)
        try:
            async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
                bodies = [registration_body(f"kill{i}") for i in range(60)]
                burst = asyncio.gather(*(http.post("/v1/auth/register", json=body) for body in bodies))
                victim = await _freeze_holding_work(cluster, redis, 0)
                cluster.signal("users", 0, signal.SIGKILL).wait(timeout=10)
                responses = await burst

            # 503 is an honest answer when auth cannot keep up (its deadline passed unexecuted).
            assert {r.status_code for r in responses} <= {201, 202, 503}, [r.text for r in responses]
            accepted = {b["email"] for b, r in zip(bodies, responses, strict=True) if r.status_code in (201, 202)}
            assert len(accepted) > len(bodies) // 2, "too few registrations accepted to prove anything"

            async def saga_settled() -> bool:
                rows = await cluster.query("auth", "SELECT count(*) FROM registrations WHERE state = 'pending'")
                return bool(rows[0][0] == 0)

            await eventually(saga_settled, timeout=60)

            registrations = await cluster.query("auth", "SELECT user_id, state, email FROM registrations")
            assert {email for _, _, email in registrations} == accepted  # a 503 left nothing behind
            completed = {user_id for user_id, state, _ in registrations if state == "completed"}
            assert {state for _, state, _ in registrations} <= {"completed", "failed"}
            assert completed, "every registration failed: the users service never worked"

            profiles = await cluster.query("users", "SELECT id FROM profiles")
            profile_ids = [row[0] for row in profiles]
            assert len(profile_ids) == len(set(profile_ids))  # exactly one profile each
            assert set(profile_ids) == completed  # no profile without a completed registration

            credentials = await cluster.query("auth", "SELECT user_id, status FROM credentials")
            assert {status for _, status in credentials} <= {"active"}  # none left pending
            assert {user_id for user_id, _ in credentials} == completed  # no orphan credential

            # What the killed consumer held was taken over by the live one, not left pending.
            assert await _pending_of(redis, cluster.stream("events.auth"), "users", victim) == 0
        finally:
            await redis.aclose()
