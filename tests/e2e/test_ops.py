"""Health, readiness, OpenAPI, JWKS, request ids, problem details and correlated logs."""

from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import System, eventually

pytestmark = pytest.mark.e2e


async def test_health(system: System) -> None:
    response = await system.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ping_goes_through_the_bus_and_fails_cleanly_without_users(system: System) -> None:
    pong = await system.http.get("/v1/ping")
    assert pong.status_code == 200
    assert pong.json() == {"service": "users"}
    await system.services["users"].stop()
    down = await system.http.get("/v1/ping")
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"


async def test_ready_lists_live_instances_and_fails_without_one(system: System) -> None:
    ready = await system.http.get("/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["redis"] == "ok"
    assert body["services"]["users"]["instances"] == ["users-test"]
    assert body["services"]["auth"]["instances"] == ["auth-test"]

    await system.services["users"].stop()
    not_ready = await system.http.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["services"]["users"]["instances"] == []


async def test_openapi_schema_lists_the_routes(system: System) -> None:
    page = await system.http.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    response = await system.http.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/v1/auth/register", "/v1/auth/login", "/v1/users/me", "/v1/auth/registrations/{registration_id}"):
        assert path in paths


async def test_jwks_publishes_public_keys_only(system: System) -> None:
    response = await system.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["alg"] == "EdDSA"
        assert "d" not in key  # the private part never leaves auth


async def test_request_id_is_echoed_or_generated(system: System) -> None:
    given = await system.http.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await system.http.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await system.http.get("/health", headers={"X-Request-ID": "bad id\twith\nstuff" + "x" * 200})
    assert hostile.headers["x-request-id"] != "bad id"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_unknown_route_and_method_are_problems(system: System) -> None:
    missing = await system.http.get("/nope", headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["correlation_id"] == "req-404"
    wrong_method = await system.http.delete("/health")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"


async def test_the_request_id_is_in_every_log_line_of_every_service(system: System, log_records: list[Any]) -> None:
    request_id = "trace-me-1"
    response = await system.http.post(
        "/v1/auth/register",
        json={"email": new_email(), "password": PASSWORD, "display_name": "Traced"},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 201

    # The saga's steps, each handled by the service it is for. (Its last event,
    # RegistrationCompleted, is for subscribers such as the mailer: users acks it unread.)
    saga = {"RegisterUser", "RegistrationStarted", "UserCreated"}

    async def saga_handled() -> list[Any] | None:
        handled = [r for r in log_records if r["message"].startswith("handled ") and r["extra"].get("type") in saga]
        return handled if {r["extra"]["type"] for r in handled} == saga else None

    handled = await eventually(saga_handled, what="every step of the saga to be logged")
    assert all(r["extra"]["correlation_id"] == request_id for r in handled)
    traced = [r for r in log_records if r["extra"].get("correlation_id") == request_id]
    assert {r["extra"].get("service") for r in traced} == {"gateway", "auth", "users"}
