"""GET /v1/users/me/activity: the caller's own trail, newest first, paged, from the events."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD, Account, register_and_login
from tests.harness import Databases, System, eventually, run_system

pytestmark = pytest.mark.e2e

ACTIVITY = "/v1/users/me/activity"


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with the activity service."""
    async with run_system(databases, redis_url=redis_url, include=("activity",)) as running:
        yield running


async def trail(system: System, account: Account, **params: Any) -> dict[str, Any]:
    response = await system.http.get(ACTIVITY, headers=account.auth, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def trail_of_length(system: System, account: Account, length: int) -> list[dict[str, Any]]:
    """The whole trail once it has ``length`` entries (events are recorded asynchronously)."""

    async def complete() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await trail(system, account, limit=100))["items"]
        assert len(items) <= length, items
        return items if len(items) == length else None

    return await eventually(complete, what=f"{length} activity entries")


async def test_the_trail_lists_the_callers_account_events_newest_first(system: System) -> None:
    account = await register_and_login(system, display_name="Ann")
    other = await register_and_login(system, display_name="Bob")
    wrong = await system.http.post(
        "/v1/auth/login",
        json={"email": account.email, "password": "not the password"},
        headers={"User-Agent": "curious-client/1.0"},
    )
    assert wrong.status_code == 401
    again = await system.http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert again.status_code == 200
    edited = await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": "Ann Smith"})
    assert edited.status_code == 200

    items = await trail_of_length(system, account, 5)

    assert [item["kind"] for item in items] == [
        "profile_updated",
        "login",
        "login_failed",
        "login",
        "account_created",
    ]
    times = [item["occurred_at"] for item in items]
    assert times == sorted(times, reverse=True)
    profile, login, failed, first_login, created = items
    assert profile["changed"] == ["display_name"]
    assert failed["reason"] == "invalid_password"
    assert failed["user_agent"] == "curious-client/1.0"
    assert failed["ip"] == login["ip"] == "127.0.0.1"
    assert login["session_id"]
    assert first_login["session_id"]
    assert login["session_id"] != first_login["session_id"]
    assert created["session_id"] is None
    assert len({item["id"] for item in items}) == 5

    # Bob sees his own: his account and his login, none of Ann's.
    theirs = await trail_of_length(system, other, 2)
    assert [item["kind"] for item in theirs] == ["login", "account_created"]
    assert not {item["id"] for item in theirs} & {item["id"] for item in items}


async def test_pages_follow_the_cursor_without_gaps_or_repeats(system: System) -> None:
    account = await register_and_login(system)
    for _ in range(3):
        login = await system.http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
        assert login.status_code == 200
    everything = await trail_of_length(system, account, 5)

    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await trail(system, account, **params)
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [item for page in pages for item in page] == everything


async def test_the_trail_needs_a_token(system: System) -> None:
    response = await system.http.get(ACTIVITY)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("cursor", ["not-a-cursor", "eyJ4IjoxfQ", "WyIyMDI2LTAxLTAxIiwiIl0"])
async def test_a_bad_cursor_is_a_422_problem(system: System, cursor: str) -> None:
    account = await register_and_login(system)
    response = await system.http.get(ACTIVITY, headers=account.auth, params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["errors"][0]["field"] == "cursor"
    assert body["correlation_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "many"}, {"cursor": "x" * 201}])
async def test_out_of_bounds_paging_parameters_are_refused(system: System, params: dict[str, str]) -> None:
    account = await register_and_login(system)
    response = await system.http.get(ACTIVITY, headers=account.auth, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
