"""At-least-once on real Redis: a failed event is handed out again, and one that keeps
failing moves to its dead-letter stream while the others flow."""

import json
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlmodel import select

from handlers.users.models import Profile
from handlers.users.service import UsersService
from schemas.envelope import DEAD_LETTER_FIELDS, Trace
from schemas.events import RegistrationStarted
from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import REDIS_URL, System, eventually

pytestmark = pytest.mark.integration


def failing(times: int | None, email: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make users fail on ``email``'s RegistrationStarted ``times`` times (None: always)."""
    original = UsersService.on_registration_started
    calls: list[str] = []

    async def flaky(self: UsersService, event: RegistrationStarted, event_id: str, trace: Trace) -> None:
        if event.email == email:
            calls.append(event_id)
            if times is None or len(calls) <= times:
                raise RuntimeError("database blip")
        await original(self, event, event_id, trace)

    monkeypatch.setattr(UsersService, "on_registration_started", flaky)
    return calls


async def state_of(system: System, registration_id: str) -> dict[str, Any]:
    response = await system.http.get(f"/v1/auth/registrations/{registration_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_a_failed_event_is_handled_again_and_the_saga_completes(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = new_email()
    calls = failing(1, email, monkeypatch)
    response = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Retry"}
    )
    assert response.status_code in {201, 202}, response.text
    user_id = response.json().get("id")
    if response.status_code == 202:

        async def completed() -> dict[str, Any] | None:
            state = await state_of(system, response.json()["registration_id"])
            return state if state["state"] == "completed" else None

        user_id = (await eventually(completed, what="the saga to complete after a retry"))["user_id"]
    assert len(calls) == 2
    assert len(set(calls)) == 1  # the same event, delivered twice
    raw = Redis.from_url(REDIS_URL)
    try:  # the error kept for a dead letter goes once the retry succeeded
        assert await raw.hgetall(system.stream("events.auth") + ":failures") == {}
    finally:
        await raw.aclose()
    async with system.sessions("users")() as session:
        assert len((await session.exec(select(Profile).where(Profile.id == user_id))).all()) == 1


async def test_an_event_that_keeps_failing_is_dead_lettered_and_the_rest_flow(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = new_email()
    calls = failing(None, poison, monkeypatch)
    bad = await system.http.post(
        "/v1/auth/register", json={"email": poison, "password": PASSWORD, "display_name": "Poison"}
    )
    assert bad.status_code == 202
    good = await system.http.post(
        "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "display_name": "Fine"}
    )
    assert good.status_code == 201

    raw = Redis.from_url(REDIS_URL)
    try:
        dlq = system.stream("dlq.events.auth")

        async def dead_letters() -> list[Any] | None:
            return await raw.xrange(dlq) or None

        [(_, fields)] = await eventually(dead_letters, timeout=20, what="the dead letter")
        assert {key.decode() for key in fields} == set(DEAD_LETTER_FIELDS)  # as docs/events.md lists them
        assert fields[b"source_stream"] == system.stream("events.auth").encode()
        assert fields[b"group"] == b"users"
        assert int(fields[b"attempts"]) == 4
        assert b"database blip" in fields[b"error"]
        assert json.loads(fields[b"__data__"])["payload"]["email"] == poison
        assert fields[b"correlation_id"]

        async def acked() -> bool:
            pending = await raw.xpending(system.stream("events.auth"), "users")
            return int(pending["pending"]) == 0

        await eventually(acked, what="the dead-lettered entry to be acked on its source")
    finally:
        await raw.aclose()
    assert len(calls) == 3
    state = await state_of(system, bad.json()["registration_id"])
    assert state["state"] == "pending"  # compensation of dead letters is not automatic yet
