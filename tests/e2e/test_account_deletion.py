"""DELETE /v1/users/me: the deletion saga across auth, users and activity, on real Redis and both databases."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import SQLModel, col, select

from handlers.activity.models import ActivityRow
from handlers.auth.models import Credential, Outbox, RegistrationRow, SessionRow
from handlers.users.models import Outbox as UsersOutbox
from handlers.users.models import Profile
from handlers.users.service import UsersService
from schemas.commands import DeleteAccount
from schemas.replies import AccountDeletion
from schemas.streams import AUTH_DELETE_ACCOUNT
from tests.e2e.conftest import PASSWORD, Account, register, register_and_login
from tests.e2e.logins import deliver
from tests.harness import Databases, System, eventually, run_system

pytestmark = pytest.mark.e2e


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with the activity service, which forgets a deleted account's trail."""
    async with run_system(databases, redis_url=redis_url, include=("activity",)) as running:
        yield running


async def rows(system: System, service: str, model: type[SQLModel], user_column: Any, user_id: str) -> list[Any]:
    async with system.sessions(service)() as session:
        return list((await session.exec(select(model).where(user_column == user_id))).all())


async def trail_length(system: System, user_id: str) -> int:
    return len(await rows(system, "activity", ActivityRow, col(ActivityRow.user_id), user_id))


async def login_status(system: System, email: str) -> int:
    response = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    return response.status_code


async def deletion_state(system: System, deletion_id: str) -> dict[str, Any]:
    response = await system.http.get(f"/v1/auth/account-deletions/{deletion_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_gone(system: System, account: Account, witness: Account) -> None:
    """Nothing of ``account`` is left anywhere, and its email is free."""
    assert await login_status(system, account.email) == 401
    assert (await system.http.get("/v1/users/me", headers=account.auth)).status_code == 401
    profile = await system.http.get(f"/v1/users/{account.user_id}", headers=witness.auth)
    assert profile.status_code == 404, profile.text
    assert await rows(system, "auth", Credential, col(Credential.user_id), account.user_id) == []
    assert await rows(system, "auth", SessionRow, col(SessionRow.user_id), account.user_id) == []
    assert await rows(system, "auth", RegistrationRow, col(RegistrationRow.user_id), account.user_id) == []
    assert await rows(system, "users", Profile, col(Profile.id), account.user_id) == []

    async def trail_gone() -> bool:
        return await trail_length(system, account.user_id) == 0

    await eventually(trail_gone, what="the activity trail to be deleted")
    assert await register(system, account.email, "Again") != account.user_id


async def test_deleting_my_account_removes_everything_and_frees_the_email(system: System) -> None:
    account = await register_and_login(system, display_name="Leaving")
    witness = await register_and_login(system, display_name="Staying")
    edited = await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": "L"})
    assert edited.status_code == 200

    async def trail_recorded() -> bool:
        return await trail_length(system, account.user_id) >= 3  # created, login, profile edit

    await eventually(trail_recorded, what="the trail to be recorded")

    response = await system.http.delete("/v1/users/me", headers=account.auth)

    assert response.status_code == 204, response.text
    assert response.content == b""
    await assert_gone(system, account, witness)
    # The witness is untouched.
    assert (await system.http.get("/v1/users/me", headers=witness.auth)).status_code == 200
    assert await trail_length(system, witness.user_id) >= 1


async def test_without_a_token_nothing_is_deleted(system: System) -> None:
    account = await register_and_login(system)
    response = await system.http.delete("/v1/users/me")
    assert response.status_code == 401
    assert await login_status(system, account.email) == 200


async def test_a_deletion_with_users_down_answers_202_and_completes_when_users_returns(
    redis_url: str, databases: Databases
) -> None:
    async with run_system(databases, redis_url=redis_url, include=("activity",), registration_wait=0.3) as system:
        account = await register_and_login(system)
        witness = await register_and_login(system)
        await system.stop("users")

        response = await system.http.delete("/v1/users/me", headers=account.auth)

        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] == "pending"
        assert response.headers["location"] == body["status_url"]
        # The tokens die at once, and nobody logs in to a half-deleted account.
        assert (await system.http.get("/v1/auth/sessions", headers=account.auth)).status_code == 401
        assert await login_status(system, account.email) == 401
        assert (await deletion_state(system, body["deletion_id"]))["state"] == "pending"
        # A second click while it runs: the same saga, not a new one.
        assert (await system.http.delete("/v1/users/me", headers=account.auth)).status_code == 401

        await system.restart("users")

        async def completed() -> bool:
            return bool((await deletion_state(system, body["deletion_id"]))["state"] == "completed")

        await eventually(completed, what="the deletion to complete once users is back")
        await assert_gone(system, account, witness)


async def test_a_refused_deletion_is_compensated_and_the_account_stays_usable(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await register_and_login(system, display_name="Held")
    held = account.user_id
    original = UsersService.deletion_refused

    def refuse(self: UsersService, profile: Profile) -> str | None:
        return "This account is under a legal hold." if profile.id == held else original(self, profile)

    monkeypatch.setattr(UsersService, "deletion_refused", refuse)

    response = await system.http.delete("/v1/users/me", headers=account.auth)

    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["detail"] == "This account is under a legal hold."
    state = await deletion_state(system, problem["deletion_id"])
    assert state["state"] == "failed"
    assert state["reason"] == "forbidden"
    # Intact and usable: log in again (the deletion ended the old sessions), read the profile.
    assert (await system.http.get("/v1/users/me", headers=account.auth)).status_code == 401
    login = await system.http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    me = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.status_code == 200
    assert me.json()["display_name"] == "Held"
    assert await trail_length(system, held) >= 1
    taken = await system.http.post(
        "/v1/auth/register", json={"email": account.email, "password": PASSWORD, "display_name": "Copy"}
    )
    assert taken.status_code == 409


async def event_id(system: System, service: str, event_type: str, user_id: str) -> str:
    model = Outbox if service == "auth" else UsersOutbox
    async with system.sessions(service)() as session:
        row = (await session.exec(select(model).where(model.type == event_type, model.subject == user_id))).one()
    return row.id


async def test_redelivered_deletion_events_change_nothing_twice(system: System) -> None:
    account = await register_and_login(system)
    assert (await system.http.delete("/v1/users/me", headers=account.auth)).status_code == 204
    # The same email, a new account: the old saga's events must not touch it.
    successor = await register_and_login(system, "Successor", email=account.email)
    started = await event_id(system, "auth", "AccountDeletionStarted", account.user_id)
    deleted = await event_id(system, "auth", "AccountDeleted", account.user_id)
    profile_deleted = await event_id(system, "users", "ProfileDeleted", account.user_id)

    await system.deliver_again("events.auth", started)
    await system.deliver_again("events.users", profile_deleted)
    await system.deliver_again("events.auth", deleted)

    async def caught_up() -> bool:
        return (
            await system.caught_up("users", "events.auth")
            and await system.caught_up("auth", "events.users")
            and await system.caught_up("activity", "events.auth")
        )

    await eventually(caught_up, what="every group to handle the redelivered events")
    assert await login_status(system, successor.email) == 200
    assert (await system.http.get("/v1/users/me", headers=successor.auth)).status_code == 200
    async with system.sessions("users")() as session:
        events = (await session.exec(select(UsersOutbox).where(UsersOutbox.subject == account.user_id))).all()
    assert [row.type for row in events].count("ProfileDeleted") == 1
    async with system.sessions("auth")() as session:
        emitted = (await session.exec(select(Outbox).where(Outbox.subject == account.user_id))).all()
    assert [row.type for row in emitted].count("AccountDeleted") == 1


async def test_a_deletion_command_delivered_again_answers_with_its_saga(system: System) -> None:
    account = await register_and_login(system)
    message_id = uuid.uuid4().hex
    first = await deliver(
        system, AUTH_DELETE_ACCOUNT, DeleteAccount(user_id=account.user_id), AccountDeletion, message_id
    )

    async def completed() -> bool:
        return bool((await deletion_state(system, first.deletion_id))["state"] == "completed")

    await eventually(completed, what="the deletion to complete")
    again = await deliver(
        system, AUTH_DELETE_ACCOUNT, DeleteAccount(user_id=account.user_id), AccountDeletion, message_id
    )
    assert again.deletion_id == first.deletion_id
    assert again.state == "completed"
    other = await system.http.delete("/v1/users/me", headers=account.auth)
    assert other.status_code == 401


async def test_the_status_of_an_unknown_or_malformed_deletion(system: System) -> None:
    assert (await system.http.get("/v1/auth/account-deletions/0123456789abcdef")).status_code == 404
    assert (await system.http.get("/v1/auth/account-deletions/not%20an%20id")).status_code == 422
