"""/metrics on the gateway and on each handler: Prometheus text whose numbers follow the traffic."""

import asyncio
from typing import Any

import httpx
import pytest

from handlers.users.service import UsersService
from schemas.envelope import Trace
from schemas.events import RegistrationStarted
from tests.e2e.conftest import PASSWORD, new_email, register_and_login
from tests.harness import Databases, Scrape, System, eventually, run_system

pytestmark = pytest.mark.e2e


async def test_the_gateway_counts_requests_by_route_and_bus_calls_by_service(system: System) -> None:
    # Waits for the gateway's own key fetch at start, which would show as a call in flight.
    assert (await system.http.get("/.well-known/jwks.json")).status_code == 200
    before = await system.metrics("gateway")
    assert (await system.http.get("/v1/ping")).status_code == 200
    assert (await system.http.get("/nowhere")).status_code == 404
    after = await system.metrics("gateway")

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("busway_http_requests_total", method="GET", route="/v1/ping", status="200") == 1
    assert moved("busway_http_request_duration_seconds_count", method="GET", route="/v1/ping") == 1
    assert moved("busway_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert moved("busway_bus_requests_total", service="users", stream="users.ping", outcome="ok") == 1
    assert moved("busway_bus_request_duration_seconds_count", service="users", stream="users.ping") == 1
    for service in ("users", "auth"):
        assert after.value("busway_circuit_breaker_state", service=service, busway_circuit_breaker_state="closed") == 1
        assert after.value("busway_circuit_breaker_state", service=service, busway_circuit_breaker_state="open") == 0
        assert after.value("busway_bus_in_flight", service=service) == 0


async def test_each_handler_serves_its_own_metrics_over_http(system: System) -> None:
    users_before = await system.metrics("users")
    assert (await system.http.get("/v1/ping")).status_code == 200
    await register_and_login(system)
    users, auth = await system.metrics("users"), await system.metrics("auth")

    assert users.value("busway_messages_total", stream="users.ping", outcome="ok") == (
        users_before.value("busway_messages_total", stream="users.ping", outcome="ok") + 1
    )
    assert users.value("busway_message_duration_seconds_count", stream="users.ping") >= 1
    assert users.value("busway_messages_total", stream="events.auth", outcome="ok") >= 1  # the saga's step
    assert auth.value("busway_messages_total", stream="auth.register", outcome="ok") == 1
    assert auth.value("busway_messages_total", stream="auth.login", outcome="ok") == 1
    # Sampled at scrape time: nothing pending, nothing lagging, nothing dead.
    assert "busway_stream_pending" in users.names()
    assert users.value("busway_stream_pending", stream="users.get", group="users") == 0
    assert users.value("busway_stream_lag", stream="users.ping", group="users") == 0
    assert users.value("busway_dead_letters", stream="events.auth") == 0
    assert "busway_outbox_backlog" in users.names()
    assert "busway_outbox_backlog" in auth.names()
    # One registry per service, even with both in one process.
    assert users.value("busway_messages_total", stream="auth.register", outcome="ok") == 0

    async def relayed() -> bool:
        return (await system.metrics("auth")).value("busway_outbox_backlog") == 0

    await eventually(relayed, what="auth's outbox to be published")


async def test_a_handler_counts_failures_redeliveries_and_dead_letters(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = new_email()

    async def always_failing(self: UsersService, event: RegistrationStarted, event_id: str, trace: Trace) -> None:
        raise RuntimeError("database blip")

    monkeypatch.setattr(UsersService, "on_registration_started", always_failing)
    response = await system.http.post(
        "/v1/auth/register", json={"email": poison, "password": PASSWORD, "display_name": "Poison"}
    )
    assert response.status_code == 202

    async def dead_lettered() -> Scrape | None:
        scrape = await system.metrics("users")
        return scrape if scrape.value("busway_dead_letters", stream="events.auth") == 1 else None

    users = await eventually(dead_lettered, timeout=20, what="the event's dead letter")
    assert users.value("busway_messages_total", stream="events.auth", outcome="dead-lettered") == 1
    assert users.value("busway_messages_total", stream="events.auth", outcome="error") == 3  # BUS_MAX_DELIVERIES
    assert users.value("busway_messages_redelivered_total", stream="events.auth") == 3  # 2 retries, then the move


async def test_a_handler_metrics_endpoint_answers_only_get_metrics(system: System) -> None:
    exporter = system.services["users"].metrics
    assert exporter is not None
    assert exporter.port is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{exporter.port}") as client:
        assert (await client.get("/elsewhere")).status_code == 404
        assert (await client.post("/metrics")).status_code == 405
        head = await client.head("/metrics")
        assert head.status_code == 200
        assert head.content == b""


async def test_the_request_log_line_has_structured_fields(system: System, log_records: list[Any]) -> None:
    await system.http.get("/v1/ping", headers={"X-Request-ID": "log-fields-1"})
    [line] = [r for r in log_records if r["extra"].get("correlation_id") == "log-fields-1" and "route" in r["extra"]]
    assert line["message"] == "GET /v1/ping 200"
    assert line["extra"]["method"] == "GET"
    assert line["extra"]["route"] == "/v1/ping"
    assert line["extra"]["status"] == 200
    assert line["extra"]["duration_ms"] >= 0
    assert line["extra"]["service"] == "gateway"


async def test_a_handler_metrics_endpoint_drops_what_is_not_http(system: System) -> None:
    exporter = system.services["users"].metrics
    assert exporter is not None
    assert exporter.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", exporter.port)
    writer.write(b"hello there\r\n\r\n")
    await writer.drain()
    assert await reader.read() == b""  # closed without an answer
    writer.close()
    await writer.wait_closed()
    assert (await system.metrics("users")).value("busway_outbox_backlog") >= 0  # still serving


async def events_on(system: System, base: str) -> int:
    """How many events a stream holds."""
    return int(await system.redis.xlen(system.stream(base)))


async def test_the_activity_service_counts_the_events_it_records_and_the_queries_it_answers(
    redis_url: str, databases: Databases
) -> None:
    async with run_system(databases, redis_url=redis_url, include=("activity",)) as system:
        account = await register_and_login(system)

        async def recorded() -> bool:
            response = await system.http.get("/v1/users/me/activity", headers=account.auth)
            assert response.status_code == 200, response.text
            return len(response.json()["items"]) == 2  # account_created, login

        await eventually(recorded, what="the account's trail")

        async def caught_up() -> bool:
            return await system.caught_up("activity", "events.auth") and await system.caught_up(
                "activity", "events.users"
            )

        await eventually(caught_up, what="activity to read both event streams")
        before = await system.metrics("activity")
        assert (await system.http.get("/v1/users/me/activity", headers=account.auth)).status_code == 200
        after = await system.metrics("activity")

        # Every event of both streams counted once: handled, or skipped (a type with no trail
        # entry, acked unread); each query counted as it is answered.
        for stream in ("events.auth", "events.users"):
            counted = [after.value("busway_messages_total", stream=stream, outcome=o) for o in ("ok", "skipped")]
            assert sum(counted) == await events_on(system, stream)
            assert after.value("busway_stream_pending", stream=stream, group="activity") == 0
            assert after.value("busway_dead_letters", stream=stream) == 0
        # RegistrationStarted makes no trail entry; account_created and login do.
        assert after.value("busway_messages_total", stream="events.auth", outcome="skipped") >= 1
        assert after.value("busway_messages_total", stream="events.auth", outcome="ok") >= 2
        assert after.value("busway_messages_total", stream="activity.list", outcome="ok") == (
            before.value("busway_messages_total", stream="activity.list", outcome="ok") + 1
        )
        assert after.value("busway_message_duration_seconds_count", stream="activity.list") >= 1
        # Its own registry: none of the users service's commands.
        assert after.value("busway_messages_total", stream="users.get", outcome="ok") == 0


async def test_the_mailer_counts_the_events_it_handles(redis_url: str, databases: Databases) -> None:
    async with run_system(databases, redis_url=redis_url, include=("mailer",)) as system:
        before = await system.metrics("mailer")
        assert before.value("busway_messages_total", stream="events.auth", outcome="ok") == 0
        email = new_email()
        response = await system.http.post(
            "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Mailed"}
        )
        assert response.status_code == 201, response.text

        async def welcomed() -> bool:
            return any(email in str(mail["To"]) for mail in system.mails())

        await eventually(welcomed, what="the welcome mail")
        await eventually(lambda: system.caught_up("mailer", "events.auth"), what="the mailer to read events.auth")
        after = await system.metrics("mailer")

        handled = await events_on(system, "events.auth")
        assert handled >= 2  # RegistrationStarted, RegistrationCompleted
        assert after.value("busway_messages_total", stream="events.auth", outcome="ok") == handled
        assert after.value("busway_message_duration_seconds_count", stream="events.auth") == handled
        assert after.value("busway_stream_pending", stream="events.auth", group="mailer") == 0
        assert after.value("busway_dead_letters", stream="events.auth") == 0
