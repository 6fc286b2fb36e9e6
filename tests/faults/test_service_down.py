"""The users service stopped: its breaker opens and answers at once, auth keeps working, and
users' return closes it again."""

import signal
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults.cluster import PASSWORD, registration_body, running_cluster
from tests.harness import eventually

pytestmark = [pytest.mark.faults]


async def test_users_down_opens_its_breaker_while_login_keeps_working(tmp_path: Path, redis_url: str) -> None:
    knobs = {
        "GATEWAY_SERVICE_TIMEOUTS": '{"users": 1}',
        "GATEWAY_ATTEMPT_TIMEOUT": "0.3",
        "GATEWAY_BREAKER_FAIL_MAX": "3",
        "GATEWAY_BREAKER_RESET_TIMEOUT": "2",
    }
    async with running_cluster(tmp_path, redis_url=redis_url, env=knobs) as cluster:
        redis = Redis.from_url(redis_url)
        try:
            async with httpx.AsyncClient(base_url=cluster.base_url, timeout=15) as http:
                body = registration_body("down")
                assert (await http.post("/v1/auth/register", json=body)).status_code == 201
                credentials = {"email": body["email"], "password": PASSWORD}
                login = await http.post("/v1/auth/login", json=credentials)
                me = {"authorization": f"Bearer {login.json()['access_token']}"}
                assert (await http.get("/v1/users/me", headers=me)).status_code == 200

                cluster.signal("users", 0, signal.SIGTERM).wait(timeout=30)

                async def breaker_open() -> httpx.Response | None:
                    response = await http.get("/v1/users/me", headers=me)
                    assert response.status_code == 503, response.text
                    return response if response.json().get("reason") == "circuit_open" else None

                opened = await eventually(breaker_open, timeout=30, what="the users breaker to open")
                assert int(opened.headers["retry-after"]) >= 1

                sent_before = await redis.xlen(cluster.stream("users.get"))
                answers = [await http.get("/v1/users/me", headers=me) for _ in range(20)]
                assert {r.status_code for r in answers} == {503}
                assert {r.json()["reason"] for r in answers} == {"circuit_open"}
                # Answered by the breaker at once: not one command reached the bus while it was open.
                assert await redis.xlen(cluster.stream("users.get")) == sent_before

                # The bulkhead: auth is a different downstream, unaffected.
                assert (await http.post("/v1/auth/login", json=credentials)).status_code == 200

                cluster.start("users")

                async def recovered() -> bool:
                    return (await http.get("/v1/users/me", headers=me)).status_code == 200

                await eventually(recovered, timeout=60, what="/v1/users/me to work again")
        finally:
            await redis.aclose()
