"""Helpers for session tests: logins with both tokens, refreshes, auth's events."""

import json
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
from pydantic import BaseModel
from sqlmodel import col, select

from gateway.state import gateway_of
from handlers.auth.models import Outbox
from tests.e2e.conftest import PASSWORD, register_and_login
from tests.harness import System

ResultT = TypeVar("ResultT", bound=BaseModel)


@dataclass(frozen=True)
class Login:
    """One session: its tokens and ids."""

    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def session_id(self) -> str:
        return str(jwt.decode(self.access_token, options={"verify_signature": False})["sid"])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def log_in(system: System, user_id: str, email: str, user_agent: str = "test-client/1") -> Login:
    response = await system.http.post(
        "/v1/auth/login", json={"email": email, "password": PASSWORD}, headers={"User-Agent": user_agent}
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Login(user_id, email, tokens["access_token"], tokens["refresh_token"])


async def new_user(system: System) -> Login:
    account = await register_and_login(system)
    return await log_in(system, account.user_id, account.email)


async def refreshed(system: System, login: Login, user_agent: str = "test-client/1") -> Login:
    response = await system.http.post(
        "/v1/auth/refresh", json={"refresh_token": login.refresh_token}, headers={"User-Agent": user_agent}
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Login(login.user_id, login.email, tokens["access_token"], tokens["refresh_token"])


async def events(system: System, user_id: str, event_type: str) -> list[dict[str, Any]]:
    """The payloads of one user's events of one type, from auth's outbox (its event log)."""
    async with system.sessions("auth")() as session:
        rows = await session.exec(
            select(Outbox).where(Outbox.subject == user_id, Outbox.type == event_type).order_by(col(Outbox.seq))
        )
        return [json.loads(row.payload) for row in rows.all()]


async def works(system: System, login: Login) -> bool:
    response = await system.http.get("/v1/users/me", headers=login.auth)
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


async def deliver(system: System, stream: str, command: BaseModel, result: type[ResultT], message_id: str) -> ResultT:
    """Send ``command`` with a given message id through the gateway's bus client; its reply.

    Sending one id twice is what a redelivery looks like to the handler.
    """
    bus = gateway_of(system.app.state).bus
    future = bus.expect(message_id)
    try:
        await bus.send(stream, command, message_id=message_id)
        return await bus.wait(future, result, timeout=5, what=stream)
    finally:
        bus.forget(message_id)
