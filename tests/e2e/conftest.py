"""Helpers for HTTP tests: a fresh user, logged in."""

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness import System, eventually

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Account:
    """A registered user with a valid access token."""

    user_id: str
    email: str
    access_token: str

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.access_token}"}


def new_email() -> str:
    """An email no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def register(system: System, email: str, display_name: str = "Test User") -> str:
    """Register ``email`` through HTTP; the new user's id.

    A 202 is a correct answer too (the saga took longer than the gateway waits, as it may
    on a loaded machine): then the registration is followed until it completes.
    """
    created = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": display_name}
    )
    if created.status_code == 201:
        user_id: str = created.json()["id"]
        return user_id
    assert created.status_code == 202, created.text
    status_url = created.json()["status_url"]

    async def completed() -> dict[str, Any] | None:
        state: dict[str, Any] = (await system.http.get(status_url)).json()
        assert state["state"] in {"pending", "completed"}, state
        return state if state["state"] == "completed" else None

    state = await eventually(completed, timeout=30, what="the registration to complete")
    return str(state["user"]["id"])


async def register_and_login(system: System, display_name: str = "Test User", email: str | None = None) -> Account:
    """Register a new account (``email``, else a fresh one) through HTTP and log it in."""
    email = email or new_email()
    user_id = await register(system, email, display_name)
    login = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return Account(user_id, email, login.json()["access_token"])


@pytest.fixture
async def account(system: System) -> Account:
    """A registered, logged-in user."""
    return await register_and_login(system)
