"""The gateway's breakers, bulkheads and retries, through HTTP, against real handlers on real Redis."""

import asyncio
import dataclasses
import uuid

import pytest

from tests.e2e.conftest import register_and_login
from tests.harness import Databases, System, eventually, run_system

pytestmark = pytest.mark.e2e


async def entries(system: System, base: str) -> int:
    """How many commands have reached a stream."""
    return int(await system.redis.xlen(system.stream(base)))


async def test_an_open_breaker_answers_503_without_touching_the_bus_and_closes_when_the_service_returns(
    redis_url: str, databases: Databases
) -> None:
    async with run_system(
        databases,
        redis_url=redis_url,
        service_timeouts={"users": 0.3},
        retries=0,
        breaker_fail_max=3,
        breaker_reset_timeout=30,
    ) as system:
        assert (await system.http.get("/v1/ping")).status_code == 200
        await system.stop("users")

        for _ in range(3):
            timed_out = await system.http.get("/v1/ping")
            assert timed_out.status_code == 503
            assert timed_out.headers["retry-after"] == "1"
        ready = await system.http.get("/ready")
        assert ready.json()["services"]["users"]["breaker"] == "open"
        assert ready.json()["services"]["auth"]["breaker"] == "closed"
        sent = await entries(system, "users.ping")
        assert sent == 4

        refused = await system.http.get("/v1/ping")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert 25 <= int(refused.headers["retry-after"]) <= 30
        body = refused.json()
        assert body["type"] == "/problems/unavailable"
        assert body["service"] == "users"
        assert body["reason"] == "circuit_open"
        assert body["correlation_id"] == refused.headers["x-request-id"]
        assert await entries(system, "users.ping") == sent  # no XADD while open

        # auth is another service: its circuit is closed and it answers.
        unknown = await system.http.get(f"/v1/auth/registrations/{uuid.uuid4().hex}")
        assert unknown.status_code == 404

        await system.restart("users")
        users = system.downstream("users")
        users.policy = dataclasses.replace(users.policy, reset_timeout=0.1)  # the reset timeout passes

        async def answered() -> bool:
            return (await system.http.get("/v1/ping")).status_code == 200

        await eventually(answered, what="the probe to close the circuit")
        assert users.state == "closed"
        assert (await system.http.get("/ready")).json()["services"]["users"]["breaker"] == "closed"
        metrics = await system.metrics("gateway")
        assert metrics.value("busway_circuit_breaker_opened_total", service="users") == 1
        assert (
            metrics.value("busway_circuit_breaker_state", service="users", busway_circuit_breaker_state="closed") == 1
        )
        assert (
            metrics.value("busway_bus_requests_total", service="users", stream="users.ping", outcome="circuit_open")
            >= 1
        )


async def test_a_full_bulkhead_refuses_that_service_while_the_other_answers(
    redis_url: str, databases: Databases
) -> None:
    async with run_system(
        databases, redis_url=redis_url, max_in_flight=1, retries=0, service_timeouts={"users": 3.0}
    ) as system:
        # The gateway's own key fetch at start must not hold auth's only slot.
        assert (await system.http.get("/.well-known/jwks.json")).status_code == 200
        await system.stop("users")
        stuck = asyncio.create_task(system.http.get("/v1/ping"))

        async def holding_the_only_slot() -> bool:
            metrics = await system.metrics("gateway")
            return metrics.value("busway_bus_in_flight", service="users") == 1

        await eventually(holding_the_only_slot, what="the first call to be in flight")
        assert await entries(system, "users.ping") == 1

        full = await system.http.get("/v1/ping")
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert full.json()["reason"] == "bulkhead_full"
        assert await entries(system, "users.ping") == 1
        assert (await system.http.get(f"/v1/auth/registrations/{uuid.uuid4().hex}")).status_code == 404

        assert (await stuck).status_code == 503  # its own timeout
        assert system.downstream("users").in_flight == 0
        assert system.downstream("users").state == "closed"


async def test_only_idempotent_queries_are_retried(redis_url: str, databases: Databases) -> None:
    async with run_system(
        databases,
        redis_url=redis_url,
        service_timeouts={"users": 1.5},
        attempt_timeout=0.15,
        retries=2,
        retry_backoff_base=0.01,
    ) as system:
        account = await register_and_login(system)
        await system.stop("users")
        gets, updates = await entries(system, "users.get"), await entries(system, "users.update")

        read = await system.http.get(f"/v1/users/{account.user_id}", headers=account.auth)
        assert read.status_code == 503
        assert await entries(system, "users.get") == gets + 3

        write = await system.http.patch("/v1/users/me", json={"display_name": "Twice?"}, headers=account.auth)
        assert write.status_code == 503
        assert await entries(system, "users.update") == updates + 1

        metrics = await system.metrics("gateway")
        assert metrics.value("busway_bus_retries_total", service="users", stream="users.get") == 2
        assert metrics.value("busway_bus_retries_total", service="users", stream="users.update") == 0


async def test_the_activity_query_is_retried(redis_url: str, databases: Databases) -> None:
    async with run_system(
        databases,
        redis_url=redis_url,
        include=("activity",),
        service_timeouts={"activity": 1.5},
        attempt_timeout=0.15,
        retries=2,
        retry_backoff_base=0.01,
    ) as system:
        account = await register_and_login(system)
        await system.stop("activity")
        lists = await entries(system, "activity.list")

        response = await system.http.get("/v1/users/me/activity", headers=account.auth)
        assert response.status_code == 503
        assert await entries(system, "activity.list") == lists + 3

        metrics = await system.metrics("gateway")
        assert metrics.value("busway_bus_retries_total", service="activity", stream="activity.list") == 2


async def test_a_retry_reaches_the_service_once_it_is_back(redis_url: str, databases: Databases) -> None:
    async with run_system(
        databases, redis_url=redis_url, service_timeouts={"users": 10.0}, attempt_timeout=0.3, retries=2
    ) as system:
        account = await register_and_login(system)
        await system.stop("users")
        before = await entries(system, "users.get")
        read = asyncio.create_task(system.http.get("/v1/users/me", headers=account.auth))

        async def retried() -> bool:
            return await entries(system, "users.get") >= before + 2

        await eventually(retried, what="a second attempt")
        await system.restart("users")
        response = await read
        assert response.status_code == 200, response.text
        assert response.json()["id"] == account.user_id
        metrics = await system.metrics("gateway")
        assert metrics.value("busway_bus_retries_total", service="users", stream="users.get") >= 1


async def test_typed_error_replies_do_not_trip_the_breaker(redis_url: str, databases: Databases) -> None:
    async with run_system(databases, redis_url=redis_url, breaker_fail_max=2) as system:
        account = await register_and_login(system)
        for _ in range(4):
            missing = await system.http.get(f"/v1/users/{uuid.uuid4().hex}", headers=account.auth)
            assert missing.status_code == 404
            wrong = await system.http.post("/v1/auth/login", json={"email": account.email, "password": "wrong one"})
            assert wrong.status_code == 401
        assert system.downstream("users").state == "closed"
        assert system.downstream("auth").state == "closed"
        assert (await system.http.get("/v1/ping")).status_code == 200
        metrics = await system.metrics("gateway")
        assert metrics.value("busway_bus_requests_total", service="users", stream="users.get", outcome="not_found") == 4
        assert metrics.value("busway_bus_retries_total", service="users", stream="users.get") == 0
