"""Helpers for HTTP tests: a fresh user, logged in."""

import uuid
from dataclasses import dataclass

import pytest

from tests.harness import System

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


async def register_and_login(system: System, display_name: str = "Test User") -> Account:
    """Register a new account through HTTP and log it in."""
    email = new_email()
    created = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": display_name}
    )
    assert created.status_code == 201, created.text
    login = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return Account(created.json()["id"], email, login.json()["access_token"])


@pytest.fixture
async def account(system: System) -> Account:
    """A registered, logged-in user."""
    return await register_and_login(system)
