"""Sessions end to end: refresh rotation and theft detection, logout, revocation at the gateway, the list."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from handlers.auth.models import SessionRow, SpentRefreshToken
from handlers.auth.service import REVOCATION_MARGIN
from schemas import streams
from schemas.commands import RefreshTokens
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import TokenPair
from schemas.streams import revoked_session
from tests.e2e.logins import Login, deliver, events, log_in, new_user, refreshed, works
from tests.harness import System

pytestmark = pytest.mark.e2e


async def test_refresh_gives_a_new_pair_and_spends_the_old_refresh_token(system: System) -> None:
    first = await new_user(system)
    second = await refreshed(system, first)

    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.session_id == first.session_id
    assert await works(system, second)
    # The spent token is kept only as its hash; the session holds the new one's hash.
    async with system.sessions("auth")() as session:
        spent = (
            await session.exec(select(SpentRefreshToken).where(SpentRefreshToken.session_id == first.session_id))
        ).all()
        row = await session.get(SessionRow, first.session_id)
    assert len(spent) == 1
    assert row is not None
    assert first.refresh_token not in {spent[0].token_hash, row.refresh_token_hash}
    third = await refreshed(system, second)
    assert await works(system, third)


async def test_a_replayed_refresh_token_is_refused_and_ends_the_whole_session(system: System) -> None:
    victim = await new_user(system)
    other_session = await log_in(system, victim.user_id, victim.email)
    child = await refreshed(system, victim)
    grandchild = await refreshed(system, child)

    # The thief presents the first, spent token.
    replay = await system.http.post("/v1/auth/refresh", json={"refresh_token": victim.refresh_token})
    assert replay.status_code == 401
    assert replay.headers["content-type"] == "application/problem+json"
    assert replay.json()["type"] == "/problems/invalid-credentials"

    # Every token descended from it is dead: refresh tokens and access tokens alike.
    for spent_or_current in (child.refresh_token, grandchild.refresh_token):
        again = await system.http.post("/v1/auth/refresh", json={"refresh_token": spent_or_current})
        assert again.status_code == 401
    for login in (victim, child, grandchild):
        assert not await works(system, login)
    # The user's other session is not touched.
    assert await works(system, other_session)
    assert await works(system, await refreshed(system, other_session))

    revoked = await events(system, victim.user_id, "SessionRevoked")
    assert revoked == [{"user_id": victim.user_id, "session_id": victim.session_id, "reason": "refresh_reuse"}]


async def test_refresh_refuses_unknown_and_malformed_tokens(system: System) -> None:
    unknown = await system.http.post("/v1/auth/refresh", json={"refresh_token": "no-such-token"})
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"].startswith("Bearer")
    for body in ({}, {"refresh_token": ""}, {"refresh_token": "x" * 513}, {"refresh_token": "t", "extra": 1}):
        response = await system.http.post("/v1/auth/refresh", json=body)
        assert response.status_code == 422, body


async def test_a_redelivered_refresh_command_is_not_taken_for_a_theft(system: System) -> None:
    """The same command id twice (a redelivery), not the same token twice: the session lives on."""
    login = await new_user(system)
    command = RefreshTokens(refresh_token=login.refresh_token)
    message_id = uuid.uuid4().hex

    pair = await deliver(system, streams.AUTH_REFRESH, command, TokenPair, message_id)
    with pytest.raises(ReplyError) as refused:
        await deliver(system, streams.AUTH_REFRESH, command, TokenPair, message_id)
    assert refused.value.reply.code == ErrorCode.INVALID_CREDENTIALS
    assert await events(system, login.user_id, "SessionRevoked") == []
    next_pair = await refreshed(system, Login(login.user_id, login.email, pair.access_token, pair.refresh_token))
    assert await works(system, next_pair)


async def test_logout_stops_the_access_token_at_the_gateway_and_the_refresh_token(system: System) -> None:
    login = await new_user(system)
    other = await log_in(system, login.user_id, login.email)
    assert await works(system, login)

    response = await system.http.post("/v1/auth/logout", headers=login.auth)
    assert response.status_code == 204
    assert response.content == b""

    assert not await works(system, login)
    me = await system.http.get("/v1/users/me", headers=login.auth)
    assert me.json()["detail"] == "The session of this access token has ended."
    assert (await system.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token})).status_code == 401
    assert (await system.http.post("/v1/auth/logout", headers=login.auth)).status_code == 401
    assert (await system.http.post("/v1/auth/logout")).status_code == 401
    assert await works(system, other)
    revoked = await events(system, login.user_id, "SessionRevoked")
    assert revoked == [{"user_id": login.user_id, "session_id": login.session_id, "reason": "logout"}]


async def test_the_revoked_key_lives_as_long_as_the_sessions_access_tokens(system: System) -> None:
    login = await new_user(system)
    key = system.stream(revoked_session(login.session_id))
    assert await system.redis.exists(key) == 0

    assert (await system.http.post("/v1/auth/logout", headers=login.auth)).status_code == 204

    access_ttl = system.settings["auth"].access_token_ttl
    ttl = await system.redis.ttl(key)
    # Until the last access token expires, plus the gateway's largest clock-skew leeway; no longer.
    assert access_ttl < ttl <= access_ttl + REVOCATION_MARGIN
    assert await system.redis.get(key) == b"logout"


async def test_the_revoked_key_counts_from_the_sessions_last_token(system: System) -> None:
    """A session last used long ago gets a shorter key; one whose tokens all expired gets none."""
    login = await new_user(system)
    old = await log_in(system, login.user_id, login.email)
    access_ttl = system.settings["auth"].access_token_ttl
    async with system.sessions("auth")() as session, session.begin():
        for session_id, age in ((login.session_id, 600), (old.session_id, access_ttl + REVOCATION_MARGIN + 60)):
            row = await session.get(SessionRow, session_id)
            assert row is not None
            row.last_used_at = datetime.now(UTC) - timedelta(seconds=age)
            session.add(row)

    assert (await system.http.post("/v1/auth/logout", headers=login.auth)).status_code == 204
    ttl = await system.redis.ttl(system.stream(revoked_session(login.session_id)))
    assert access_ttl + REVOCATION_MARGIN - 600 - 5 <= ttl <= access_ttl + REVOCATION_MARGIN - 600

    revoke = await system.http.delete(f"/v1/auth/sessions/{old.session_id}", headers=login.auth)
    assert revoke.status_code == 401  # the caller's own session has just ended
    fresh = await log_in(system, login.user_id, login.email)
    assert (await system.http.delete(f"/v1/auth/sessions/{old.session_id}", headers=fresh.auth)).status_code == 204
    assert await system.redis.exists(system.stream(revoked_session(old.session_id))) == 0


async def test_the_revocation_check_makes_no_bus_round_trip(system: System) -> None:
    """With auth stopped, tokens are still checked: valid ones pass, revoked ones do not."""
    login = await new_user(system)
    ended = await log_in(system, login.user_id, login.email)
    assert (await system.http.post("/v1/auth/logout", headers=ended.auth)).status_code == 204

    await system.services["auth"].stop()
    assert await works(system, login)
    assert not await works(system, ended)


async def test_sessions_lists_my_live_sessions_with_the_current_one_marked(system: System) -> None:
    first = await new_user(system)  # register_and_login made one more session before this one
    second = await log_in(system, first.user_id, first.email, user_agent="phone/2")
    ended = await log_in(system, first.user_id, first.email)
    assert (await system.http.post("/v1/auth/logout", headers=ended.auth)).status_code == 204
    before = await system.http.get("/v1/auth/sessions", headers=second.auth)
    assert before.status_code == 200
    listed = before.json()["sessions"]
    assert len(listed) == 3
    assert ended.session_id not in {s["id"] for s in listed}
    mine = next(s for s in listed if s["id"] == second.session_id)
    assert mine == {
        "id": second.session_id,
        "created_at": mine["created_at"],
        "last_used_at": mine["last_used_at"],
        "user_agent": "phone/2",
        "ip": "127.0.0.1",
        "current": True,
    }
    assert [s["current"] for s in listed].count(True) == 1

    # A refresh moves last used (and records the client it came from).
    renewed = await refreshed(system, first, user_agent="laptop/3")
    after = {s["id"]: s for s in (await system.http.get("/v1/auth/sessions", headers=renewed.auth)).json()["sessions"]}
    first_before = next(s for s in listed if s["id"] == first.session_id)
    assert after[first.session_id]["last_used_at"] > first_before["last_used_at"]
    assert after[first.session_id]["created_at"] == first_before["created_at"]
    assert after[first.session_id]["user_agent"] == "laptop/3"
    assert after[first.session_id]["current"] is True
    assert next(iter(after.values()))["id"] == first.session_id  # most recently used first

    assert (await system.http.get("/v1/auth/sessions")).status_code == 401


async def test_deleting_a_session_ends_only_my_own(system: System) -> None:
    me = await new_user(system)
    my_other = await log_in(system, me.user_id, me.email)
    someone = await new_user(system)

    theirs = await system.http.delete(f"/v1/auth/sessions/{someone.session_id}", headers=me.auth)
    assert theirs.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    unknown = await system.http.delete(f"/v1/auth/sessions/{uuid.uuid4().hex}", headers=me.auth)
    assert unknown.status_code == 404
    assert theirs.json()["detail"] == unknown.json()["detail"]
    assert await works(system, someone)
    assert (await system.http.delete("/v1/auth/sessions/not%20an%20id", headers=me.auth)).status_code == 422

    mine = await system.http.delete(f"/v1/auth/sessions/{my_other.session_id}", headers=me.auth)
    assert mine.status_code == 204
    assert not await works(system, my_other)
    refresh = await system.http.post("/v1/auth/refresh", json={"refresh_token": my_other.refresh_token})
    assert refresh.status_code == 401
    assert await works(system, me)
    listed = (await system.http.get("/v1/auth/sessions", headers=me.auth)).json()["sessions"]
    assert my_other.session_id not in {s["id"] for s in listed}
    # Once more: it has ended already, nothing changes.
    again = await system.http.delete(f"/v1/auth/sessions/{my_other.session_id}", headers=me.auth)
    assert again.status_code == 204
    revoked = await events(system, me.user_id, "SessionRevoked")
    assert revoked == [{"user_id": me.user_id, "session_id": my_other.session_id, "reason": "revoked"}]
    assert await events(system, someone.user_id, "SessionRevoked") == []


async def test_openapi_documents_the_session_and_password_routes(system: System) -> None:
    paths = (await system.http.get("/schema/openapi.json")).json()["paths"]
    documented = {
        ("/v1/auth/refresh", "post"): ({"200", "401", "400"}, False),
        ("/v1/auth/logout", "post"): ({"204", "401"}, True),
        ("/v1/auth/password", "post"): ({"204", "401", "403", "422"}, True),
        ("/v1/auth/password-reset", "post"): ({"202", "422"}, False),
        ("/v1/auth/password-reset/confirm", "post"): ({"204", "400", "422"}, False),
        ("/v1/auth/sessions", "get"): ({"200", "401"}, True),
        ("/v1/auth/sessions/{session_id}", "delete"): ({"204", "401", "404"}, True),
    }
    for (path, method), (statuses, bearer) in documented.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), path
        assert (operation.get("security") == [{"BearerToken": []}]) is bearer, path


async def test_two_refreshes_racing_with_one_token_end_the_session(system: System) -> None:
    login = await new_user(system)
    results = await asyncio.gather(
        *(system.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token}) for _ in range(2))
    )
    assert sorted(r.status_code for r in results) == [200, 401], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()
    again = await system.http.post("/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]})
    assert again.status_code == 401
    revoked = await events(system, login.user_id, "SessionRevoked")
    assert revoked == [{"user_id": login.user_id, "session_id": login.session_id, "reason": "refresh_reuse"}]
