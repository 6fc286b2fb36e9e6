"""Lockout, rate limits, CORS and the admin role, through HTTP on real Redis and both databases.

Whether auth was asked is read from the auth.login stream's entries-added counter (login
commands are deleted from the stream once handled, so its length says nothing).
"""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bus.resp import Script
from gateway.state import gateway_of
from handlers.auth.service import set_admin
from schemas.errors import ErrorCode, ReplyError
from tests.e2e.conftest import PASSWORD, new_email, register_and_login
from tests.e2e.logins import log_in
from tests.harness import Databases, System, run_system

WRONG = "not the password"
# Test clients speak through a trusted proxy, so each test can pick its client IP.
PROXY = {"trusted_proxies": ["127.0.0.1/32"]}


def from_ip(ip: str) -> dict[str, str]:
    """Headers of a request that a trusted proxy forwarded for ``ip``."""
    return {"X-Forwarded-For": ip}


async def logins_sent(system: System) -> int:
    """How many login commands the gateway has put on the bus so far."""
    try:
        info: dict[Any, Any] = await system.redis.xinfo_stream(system.stream("auth.login"))
    except Exception:  # no stream yet: nothing sent
        return 0
    return int(info["entries-added"])


async def login(system: System, email: str, password: str, ip: str = "203.0.113.1") -> httpx.Response:
    return await system.http.post("/v1/auth/login", json={"email": email, "password": password}, headers=from_ip(ip))


@pytest.fixture
async def guarded(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with small limits: 3 failures per account, 5 per IP."""
    async with run_system(
        databases, redis_url=redis_url, login_max_failures=3, login_max_failures_per_ip=5, **PROXY
    ) as running:
        yield running


def assert_too_many(response: httpx.Response, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(response.headers["retry-after"]) <= window
    assert response.json()["type"] == "/problems/too-many-requests"


async def test_an_account_is_locked_out_after_n_failures_and_auth_is_not_asked(guarded: System) -> None:
    account = await register_and_login(guarded)
    before = await logins_sent(guarded)
    for _ in range(3):
        assert (await login(guarded, account.email, WRONG)).status_code == 401
    assert await logins_sent(guarded) == before + 3

    locked = await login(guarded, account.email, WRONG)
    assert_too_many(locked, 900)
    # The right password does not open it either, nor does another IP: the account is locked.
    assert_too_many(await login(guarded, account.email, PASSWORD), 900)
    assert_too_many(await login(guarded, account.email, PASSWORD, ip="198.51.100.7"), 900)
    assert await logins_sent(guarded) == before + 3


async def test_a_successful_login_resets_the_account_count(guarded: System) -> None:
    account = await register_and_login(guarded)
    for _ in range(2):
        assert (await login(guarded, account.email, WRONG)).status_code == 401
    assert (await login(guarded, account.email, PASSWORD)).status_code == 200
    # Two more failures: four in all, but only two since the success.
    for _ in range(2):
        assert (await login(guarded, account.email, WRONG)).status_code == 401
    assert (await login(guarded, account.email, PASSWORD)).status_code == 200


async def test_a_login_keeps_its_tokens_when_its_reservation_cannot_be_given_back(guarded: System) -> None:
    account = await register_and_login(guarded)
    limits = gateway_of(guarded.app.state).limits
    limits._release = Script("return redis.error_reply('ERR the counters are gone')")

    succeeded = await login(guarded, account.email, PASSWORD)
    assert succeeded.status_code == 200, succeeded.text
    assert jwt.decode(succeeded.json()["access_token"], options={"verify_signature": False})["sub"] == account.user_id
    await limits.stop()  # the release has run, and failed
    # Its reservation stays counted: two failures more make three, the limit.
    for _ in range(2):
        assert (await login(guarded, account.email, WRONG)).status_code == 401
    assert_too_many(await login(guarded, account.email, PASSWORD), 900)


async def test_an_attempt_that_got_no_verdict_is_not_counted(guarded: System, monkeypatch: pytest.MonkeyPatch) -> None:
    account = await register_and_login(guarded)
    before = await logins_sent(guarded)

    async def auth_unavailable(*_: Any, **__: Any) -> Any:
        raise ReplyError("auth is not answering", code=ErrorCode.UNAVAILABLE)

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a fault of the gateway's")

    # Four attempts, past the account's limit of three, none of them answered by auth.
    for fault in (auth_unavailable, broken, auth_unavailable, broken):
        monkeypatch.setattr(gateway_of(guarded.app.state).bus, "request", fault)
        answer = await login(guarded, account.email, PASSWORD)
        assert answer.status_code == (503 if fault is auth_unavailable else 500), answer.text
        assert "Traceback" not in answer.text
    monkeypatch.undo()
    assert await logins_sent(guarded) == before
    # Their reservations were given back: two wrong passwords now are two failures, not six.
    for _ in range(2):
        assert (await login(guarded, account.email, WRONG)).status_code == 401
    assert (await login(guarded, account.email, PASSWORD)).status_code == 200


async def test_an_unknown_account_is_locked_out_the_same_way(guarded: System) -> None:
    known = await register_and_login(guarded)
    unknown = new_email()
    for n, email in enumerate((known.email, unknown)):
        for _ in range(3):
            assert (await login(guarded, email, WRONG, ip=f"192.0.2.{10 + n}")).status_code == 401
    before = await logins_sent(guarded)
    answers = [await login(guarded, email, WRONG, ip="192.0.2.12") for email in (known.email, unknown)]
    assert await logins_sent(guarded) == before
    for answer in answers:
        assert_too_many(answer, 900)

    def comparable(response: httpx.Response) -> dict[str, Any]:
        body = dict(response.json())
        body.pop("correlation_id")
        return {"body": body, "retry_after_set": "retry-after" in response.headers}

    assert comparable(answers[0]) == comparable(answers[1])


async def test_failures_from_one_ip_lock_it_out_across_accounts(guarded: System) -> None:
    # Five failures on five different (unknown) emails: no account reaches its own limit.
    for _ in range(5):
        assert (await login(guarded, new_email(), WRONG, ip="198.51.100.20")).status_code == 401
    before = await logins_sent(guarded)
    assert_too_many(await login(guarded, new_email(), WRONG, ip="198.51.100.20"), 900)
    assert await logins_sent(guarded) == before
    # Another client is not affected.
    assert (await login(guarded, new_email(), WRONG, ip="198.51.100.21")).status_code == 401
    assert await logins_sent(guarded) == before + 1


async def test_register_is_rate_limited_per_client_ip(redis_url: str, databases: Databases) -> None:
    async with run_system(databases, redis_url=redis_url, rate_limits={"register": 2}, **PROXY) as system:

        async def register(ip: str) -> httpx.Response:
            body = {"email": new_email(), "password": PASSWORD, "display_name": "Rate"}
            return await system.http.post("/v1/auth/register", json=body, headers=from_ip(ip))

        assert (await register("203.0.113.50")).status_code == 201
        assert (await register("203.0.113.50")).status_code == 201
        assert_too_many(await register("203.0.113.50"), 60)
        # Counted before the body is read: over the limit, a bad body is still a 429.
        bad = await system.http.post("/v1/auth/register", content=b"{", headers=from_ip("203.0.113.50"))
        assert_too_many(bad, 60)
        assert (await register("203.0.113.51")).status_code == 201


async def test_the_client_ip_is_the_peer_unless_a_trusted_proxy_forwards(redis_url: str, databases: Databases) -> None:
    # No trusted proxy: X-Forwarded-For is ignored, so changing it does not escape the limit.
    async with run_system(databases, redis_url=redis_url, rate_limits={"password-reset": 1}) as system:
        body = {"email": new_email()}
        first = await system.http.post("/v1/auth/password-reset", json=body, headers=from_ip("192.0.2.1"))
        assert first.status_code == 202
        second = await system.http.post("/v1/auth/password-reset", json=body, headers=from_ip("192.0.2.2"))
        assert_too_many(second, 60)


@pytest.fixture
async def cors(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    async with run_system(databases, redis_url=redis_url, cors_origins=["https://app.example.com"]) as running:
        yield running


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


async def test_cors_preflight_allows_a_configured_origin(cors: System) -> None:
    response = await cors.http.options("/v1/auth/login", headers=preflight("https://app.example.com"))
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in response.headers["access-control-allow-methods"]
    simple = await cors.http.get("/health", headers={"Origin": "https://app.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"


async def test_cors_preflight_refuses_another_origin(cors: System) -> None:
    response = await cors.http.options("/v1/auth/login", headers=preflight("https://evil.example.net"))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    simple = await cors.http.get("/health", headers={"Origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in simple.headers


async def test_no_cors_headers_without_configured_origins(system: System) -> None:
    response = await system.http.get("/health", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_admins_list_every_user_page_by_page(system: System) -> None:
    admin = await register_and_login(system, "Admin")
    others = [await register_and_login(system, f"User {n}") for n in range(3)]
    await set_admin(system.sessions("auth"), admin.email, admin=True)
    token = await log_in(system, admin.user_id, admin.email)
    assert jwt.decode(token.access_token, options={"verify_signature": False})["roles"] == ["admin"]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await system.http.get("/v1/users", params=params, headers=token.auth)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # The database is shared with earlier tests: ours come last, in registration order, each once.
    ours = [admin.user_id, *(other.user_id for other in others)]
    assert len(seen) == len(set(seen))
    assert seen[-4:] == ours
    assert pages == (len(seen) + 1) // 2


async def test_the_user_list_needs_the_admin_role(system: System) -> None:
    account = await register_and_login(system)
    forbidden = await system.http.get("/v1/users", headers=account.auth)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"].startswith("application/problem+json")
    anonymous = await system.http.get("/v1/users")
    assert anonymous.status_code == 401
    bad_cursor = await system.http.get("/v1/users", params={"cursor": "nope"}, headers=account.auth)
    assert bad_cursor.status_code == 403


async def test_a_granted_role_shows_at_the_next_refresh_and_a_revoked_one_goes(system: System) -> None:
    account = await register_and_login(system)
    session = await log_in(system, account.user_id, account.email)
    await set_admin(system.sessions("auth"), account.email, admin=True)
    # The token in hand was issued before the grant.
    assert (await system.http.get("/v1/users", headers=session.auth)).status_code == 403
    refreshed = await system.http.post("/v1/auth/refresh", json={"refresh_token": session.refresh_token})
    tokens = refreshed.json()
    admin_auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await system.http.get("/v1/users", headers=admin_auth)).status_code == 200
    bad = await system.http.get("/v1/users", params={"cursor": "nope"}, headers=admin_auth)
    assert bad.status_code == 422

    await set_admin(system.sessions("auth"), account.email, admin=False)
    again = await system.http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    user_auth = {"Authorization": f"Bearer {again.json()['access_token']}"}
    assert (await system.http.get("/v1/users", headers=user_auth)).status_code == 403


def busway(*args: str, databases: Databases) -> subprocess.CompletedProcess[str]:
    """Run the busway command with the test databases."""
    env = {**os.environ, "BUSWAY_ENV": "test", "AUTH_DATABASE_URL": databases.auth_url, "LOG_LEVEL": "WARNING"}
    command = [str(Path(sys.executable).parent / "busway"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)


async def test_grant_admin_from_the_command_line(system: System) -> None:
    account = await register_and_login(system)
    granted = await asyncio.to_thread(busway, "grant-admin", account.email.upper(), databases=system.databases)
    assert granted.returncode == 0, granted.stderr
    assert f"user {account.user_id}" in granted.stdout
    session = await log_in(system, account.user_id, account.email)
    assert (await system.http.get("/v1/users", headers=session.auth)).status_code == 200

    revoked = await asyncio.to_thread(busway, "grant-admin", "--revoke", account.email, databases=system.databases)
    assert revoked.returncode == 0, revoked.stderr
    session = await log_in(system, account.user_id, account.email)
    assert (await system.http.get("/v1/users", headers=session.auth)).status_code == 403


async def test_grant_admin_of_an_unknown_email_is_one_clear_line(system: System) -> None:
    email = new_email()
    result = await asyncio.to_thread(busway, "grant-admin", email, databases=system.databases)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no account has the email {email}"
    assert result.stdout == ""
