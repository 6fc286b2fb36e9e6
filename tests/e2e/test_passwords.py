"""Passwords end to end: change, reset (request and confirm), and the monolith's bcrypt hashes."""

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import pytest
from sqlmodel import select

from handlers.auth.models import Credential, CredentialStatus, PasswordReset
from schemas import streams
from schemas.commands import ChangePassword, ConfirmPasswordReset
from schemas.replies import Done
from tests.e2e.conftest import PASSWORD, new_email
from tests.e2e.logins import Login, deliver, events, log_in, new_user, refreshed, works
from tests.harness import System, eventually

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase"


async def can_log_in(system: System, email: str, password: str) -> bool:
    response = await system.http.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


async def reset_token(system: System, user_id: str, count: int = 1) -> str:
    """The token of the user's ``count``-th PasswordResetRequested, as a mailer would get it."""

    async def requested() -> list[dict[str, Any]] | None:
        found = await events(system, user_id, "PasswordResetRequested")
        return found if len(found) >= count else None

    found = await eventually(requested, what="PasswordResetRequested")
    return str(found[count - 1]["token"])


async def request_reset(system: System, email: str) -> None:
    response = await system.http.post("/v1/auth/password-reset", json={"email": email})
    assert response.status_code == 202, response.text


async def test_changing_the_password_ends_every_other_session(system: System) -> None:
    me = await new_user(system)
    phone = await log_in(system, me.user_id, me.email)

    response = await system.http.post(
        "/v1/auth/password", headers=me.auth, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204, response.text

    assert not await works(system, phone)
    assert (await system.http.post("/v1/auth/refresh", json={"refresh_token": phone.refresh_token})).status_code == 401
    # The caller's own session goes on: its access token and its refresh token.
    assert await works(system, me)
    assert await works(system, await refreshed(system, me))
    assert not await can_log_in(system, me.email, PASSWORD)
    assert await can_log_in(system, me.email, NEW_PASSWORD)

    assert await events(system, me.user_id, "PasswordChanged") == [{"user_id": me.user_id, "via_reset": False}]
    revoked = await events(system, me.user_id, "SessionRevoked")
    assert {r["reason"] for r in revoked} == {"password_changed"}
    assert phone.session_id in {r["session_id"] for r in revoked}
    assert me.session_id not in {r["session_id"] for r in revoked}


async def test_a_wrong_current_password_is_403_and_changes_nothing(system: System) -> None:
    me = await new_user(system)
    phone = await log_in(system, me.user_id, me.email)

    response = await system.http.post(
        "/v1/auth/password", headers=me.auth, json={"current_password": "not my password", "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/wrong-password"
    # 403, not 401: the access token is fine, and a client must not drop it.
    assert "www-authenticate" not in response.headers
    assert await works(system, me)
    assert await works(system, phone)
    assert await can_log_in(system, me.email, PASSWORD)
    assert await events(system, me.user_id, "PasswordChanged") == []


async def test_a_password_change_needs_a_token_and_a_valid_new_password(system: System) -> None:
    me = await new_user(system)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await system.http.post("/v1/auth/password", json=body)).status_code == 401
    for bad in ({"current_password": PASSWORD, "new_password": "short"}, {"current_password": PASSWORD}, {}):
        response = await system.http.post("/v1/auth/password", headers=me.auth, json=bad)
        assert response.status_code == 422, bad
    assert await can_log_in(system, me.email, PASSWORD)


async def test_a_redelivered_password_change_answers_as_the_first_and_changes_nothing_more(system: System) -> None:
    me = await new_user(system)
    phone = await log_in(system, me.user_id, me.email)
    command = ChangePassword(
        user_id=me.user_id, session_id=me.session_id, current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    message_id = uuid.uuid4().hex

    first = await deliver(system, streams.AUTH_CHANGE_PASSWORD, command, Done, message_id)
    # Its current password is no longer right: only the record of the first outcome can answer this.
    second = await deliver(system, streams.AUTH_CHANGE_PASSWORD, command, Done, message_id)

    assert first == second == Done()
    assert len(await events(system, me.user_id, "PasswordChanged")) == 1
    assert [r["session_id"] for r in await events(system, me.user_id, "SessionRevoked")].count(phone.session_id) == 1
    assert await can_log_in(system, me.email, NEW_PASSWORD)


async def test_a_reset_request_answers_the_same_for_known_and_unknown_emails(system: System) -> None:
    me = await new_user(system)
    known = await system.http.post("/v1/auth/password-reset", json={"email": me.email})
    unknown = await system.http.post("/v1/auth/password-reset", json={"email": new_email()})

    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content

    def without_request_id(headers: Any) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k.lower() != "x-request-id"}

    assert without_request_id(known.headers) == without_request_id(unknown.headers)
    token = await reset_token(system, me.user_id)
    assert len(token) >= 32
    # Not an email address: that says nothing about accounts.
    assert (await system.http.post("/v1/auth/password-reset", json={"email": "nope"})).status_code == 422


async def test_a_reset_request_is_answered_without_waiting_for_auth(system: System) -> None:
    """Both answers are given before auth does any work: the same one bus message each, then 202.

    So neither the answer nor its timing can depend on whether the email has an account.
    """
    me = await new_user(system)
    stranger = new_email()
    stream = system.stream(streams.AUTH_REQUEST_PASSWORD_RESET)
    await system.services["auth"].stop()

    await request_reset(system, me.email)
    await request_reset(system, stranger)
    entries = await system.redis.xrange(stream) or []
    # One command each, alike but for the email, not handled yet.
    sent = [json.loads((fields or {})[b"__data__"]) for _, fields in entries]
    assert [(m["type"], set(m["payload"])) for m in sent] == [("RequestPasswordReset", {"email"})] * 2
    assert await events(system, me.user_id, "PasswordResetRequested") == []

    await system.restart("auth")
    requested = await eventually(
        lambda: events(system, me.user_id, "PasswordResetRequested"), what="PasswordResetRequested"
    )
    assert len(requested) == 1
    assert requested[0]["email"] == me.email
    assert datetime.fromisoformat(requested[0]["expires_at"]) > datetime.now(UTC)

    async def handled() -> bool:
        return await system.redis.xlen(stream) == 0  # secret: deleted once handled

    await eventually(handled, what="both reset requests handled")
    async with system.sessions("auth")() as session:
        rows = (await session.exec(select(PasswordReset))).all()
    assert {row.user_id for row in rows} >= {me.user_id}
    assert stranger not in {row.user_id for row in rows}


async def test_a_reset_token_sets_a_new_password_once_and_ends_every_session(system: System) -> None:
    me = await new_user(system)
    other = await log_in(system, me.user_id, me.email)
    await request_reset(system, me.email)
    token = await reset_token(system, me.user_id)
    async with system.sessions("auth")() as session:
        stored = (await session.exec(select(PasswordReset).where(PasswordReset.user_id == me.user_id))).all()
    # Only its hash is kept.
    assert [row.token_hash for row in stored] == [hashlib.sha256(token.encode()).hexdigest()]

    confirm = await system.http.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert confirm.status_code == 204, confirm.text

    assert await can_log_in(system, me.email, NEW_PASSWORD)
    assert not await can_log_in(system, me.email, PASSWORD)
    for login in (me, other):
        assert not await works(system, login)
        refresh = await system.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token})
        assert refresh.status_code == 401
    assert await events(system, me.user_id, "PasswordChanged") == [{"user_id": me.user_id, "via_reset": True}]
    revoked = await events(system, me.user_id, "SessionRevoked")
    assert {r["reason"] for r in revoked} == {"password_reset"}
    assert {me.session_id, other.session_id} <= {r["session_id"] for r in revoked}

    reused = await system.http.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "yet another passphrase"}
    )
    assert reused.status_code == 400
    assert reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["type"] == "/problems/invalid-reset-token"
    assert await can_log_in(system, me.email, NEW_PASSWORD)


async def test_bad_expired_and_replaced_reset_tokens_are_400(system: System) -> None:
    me = await new_user(system)

    async def confirm(token: str) -> int:
        response = await system.http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        return response.status_code

    assert await confirm("not-a-token") == 400

    await request_reset(system, me.email)
    expired = await reset_token(system, me.user_id)
    async with system.sessions("auth")() as session, session.begin():
        row = await session.get(PasswordReset, hashlib.sha256(expired.encode()).hexdigest())
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
    assert await confirm(expired) == 400

    await request_reset(system, me.email)
    replaced = await reset_token(system, me.user_id, count=2)
    await request_reset(system, me.email)
    latest = await reset_token(system, me.user_id, count=3)
    assert await confirm(replaced) == 400
    assert await can_log_in(system, me.email, PASSWORD)

    # A password change kills the tokens issued before it.
    await request_reset(system, me.email)
    before_change = await reset_token(system, me.user_id, count=4)
    changed = await system.http.post(
        "/v1/auth/password", headers=me.auth, json={"current_password": PASSWORD, "new_password": "changed meanwhile"}
    )
    assert changed.status_code == 204
    assert await confirm(latest) == 400
    assert await confirm(before_change) == 400
    assert await can_log_in(system, me.email, "changed meanwhile")
    invalid = await system.http.post("/v1/auth/password-reset/confirm", json={"token": "", "new_password": "short"})
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} == {"token", "new_password"}


async def test_a_redelivered_reset_confirmation_answers_as_the_first(system: System) -> None:
    me = await new_user(system)
    await request_reset(system, me.email)
    token = await reset_token(system, me.user_id)
    command = ConfirmPasswordReset(token=token, new_password=NEW_PASSWORD)
    message_id = uuid.uuid4().hex

    first = await deliver(system, streams.AUTH_CONFIRM_PASSWORD_RESET, command, Done, message_id)
    # The token is spent: only the record of the first outcome can answer this one.
    second = await deliver(system, streams.AUTH_CONFIRM_PASSWORD_RESET, command, Done, message_id)

    assert first == second == Done()
    assert len(await events(system, me.user_id, "PasswordChanged")) == 1
    assert await can_log_in(system, me.email, NEW_PASSWORD)


async def add_monolith_user(system: System, password: bytes) -> Login:
    """A credential as the monolith import leaves it: active, with a bcrypt hash."""
    user_id, email = uuid.uuid4().hex, new_email()
    legacy_hash = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    async with system.sessions("auth")() as session, session.begin():
        session.add(Credential(user_id=user_id, email=email, password_hash=legacy_hash, status=CredentialStatus.ACTIVE))
    return Login(user_id, email, "", "")


async def stored_hash(system: System, user_id: str) -> str:
    async with system.sessions("auth")() as session:
        credential = await session.get(Credential, user_id)
    assert credential is not None
    return credential.password_hash


async def test_a_monolith_bcrypt_hash_logs_in_and_is_upgraded_to_argon2(system: System) -> None:
    legacy = await add_monolith_user(system, b"monolith password")
    assert (await stored_hash(system, legacy.user_id)).startswith("$2b$")

    assert await can_log_in(system, legacy.email, "monolith password")
    assert (await stored_hash(system, legacy.user_id)).startswith("$argon2")
    assert await can_log_in(system, legacy.email, "monolith password")
    assert not await can_log_in(system, legacy.email, "wrong password")


async def test_passwords_over_72_bytes_never_crash(system: System) -> None:
    """bcrypt refuses over 72 bytes; argon2 takes them whole, and no path answers 500."""
    long = "é" * 40  # 80 bytes in UTF-8
    legacy = await add_monolith_user(system, b"short pw")
    assert not await can_log_in(system, legacy.email, long)
    assert (await stored_hash(system, legacy.user_id)).startswith("$2b$")

    email = new_email()
    created = await system.http.post(
        "/v1/auth/register", json={"email": email, "password": long, "display_name": "Long"}
    )
    assert created.status_code == 201, created.text
    assert await can_log_in(system, email, long)
    # All 80 bytes count: the first 72 alone are not the password.
    assert not await can_log_in(system, email, "é" * 36)
