"""Login, tokens checked at the gateway, and the profile routes, end to end."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from handlers.auth.keys import SigningKey, generate_pem
from tests.e2e.conftest import PASSWORD, Account, new_email, register_and_login
from tests.harness import SIGNING_KEY, System

pytestmark = pytest.mark.e2e

KEY = SigningKey.from_pem(SIGNING_KEY.encode())


def claims(account: Account, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "busway-auth",
        "aud": "busway",
        "sub": account.user_id,
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: SigningKey = KEY, kid: str | None = None) -> str:
    return jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": kid or key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """The algorithm-confusion attack: HMAC keyed with the published public key."""
    public_pem = KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY.kid}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


async def test_login_returns_a_signed_access_token_and_a_refresh_token(system: System) -> None:
    account = await register_and_login(system)
    login = await system.http.post("/v1/auth/login", json={"email": account.email.upper(), "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] > 0
    assert len(tokens["refresh_token"]) >= 32

    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    jwks = (await system.http.get("/.well-known/jwks.json")).json()["keys"]
    assert header["kid"] in {key["kid"] for key in jwks}
    public = jwt.PyJWK(next(key for key in jwks if key["kid"] == header["kid"]))
    decoded = jwt.decode(tokens["access_token"], public.key, algorithms=["EdDSA"], audience="busway")
    assert set(decoded) >= {"iss", "aud", "sub", "sid", "jti", "exp", "iat"}
    assert decoded["sub"] == account.user_id
    assert decoded["iss"] == "busway-auth"


async def test_login_failures_share_one_generic_401(system: System) -> None:
    account = await register_and_login(system)
    wrong_password = await system.http.post("/v1/auth/login", json={"email": account.email, "password": "wrong pw!"})
    unknown_email = await system.http.post("/v1/auth/login", json={"email": new_email(), "password": PASSWORD})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json()["detail"] == unknown_email.json()["detail"]
    assert wrong_password.headers["content-type"] == "application/problem+json"


async def test_login_rejects_an_invalid_body(system: System) -> None:
    response = await system.http.post("/v1/auth/login", json={"email": "x@example.com"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"password"}


async def test_me_returns_and_updates_the_own_profile(system: System, account: Account) -> None:
    me = await system.http.get("/v1/users/me", headers=account.auth)
    assert me.status_code == 200
    assert me.json()["email"] == account.email
    assert me.json()["display_name"] == "Test User"

    patched = await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": "Renamed"})
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Renamed"
    assert patched.json()["updated_at"] > me.json()["updated_at"]
    again = await system.http.get("/v1/users/me", headers=account.auth)
    assert again.json()["display_name"] == "Renamed"


@pytest.mark.parametrize(
    "body",
    [{"display_name": ""}, {"email": "new@example.com"}, {"display_name": "x" * 101}, {"display_name": "a\u0000b"}],
)
async def test_patch_me_rejects_invalid_changes(system: System, account: Account, body: dict[str, str]) -> None:
    response = await system.http.patch("/v1/users/me", headers=account.auth, json=body)
    assert response.status_code == 422
    assert response.json()["errors"]


async def test_public_profile_hides_the_email(system: System, account: Account) -> None:
    other = await register_and_login(system, display_name="Other")
    response = await system.http.get(f"/v1/users/{other.user_id}", headers=account.auth)
    assert response.status_code == 200
    assert response.json() == {
        "id": other.user_id,
        "display_name": "Other",
        "created_at": response.json()["created_at"],
    }
    missing = await system.http.get("/v1/users/nobody", headers=account.auth)
    assert missing.status_code == 404
    unauthenticated = await system.http.get(f"/v1/users/{other.user_id}")
    assert unauthenticated.status_code == 401


def bad_tokens(account: Account) -> dict[str, str]:
    other_key = SigningKey.from_pem(generate_pem())
    return {
        "expired": signed(claims(account, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "bad signature": signed(claims(account), key=other_key, kid=KEY.kid),
        "unknown key": signed(claims(account), key=other_key),
        "wrong audience": signed(claims(account, aud="someone-else")),
        "wrong issuer": signed(claims(account, iss="evil")),
        "no session": signed(claims(account, sid=None)),
        "alg none": jwt.encode(claims(account), None, algorithm="none"),  # type: ignore[arg-type]
        "hs256 with the public key": hs256_with_public_key(claims(account)),
        "garbage": "not.a.token",
        "tampered": account.access_token[:-4] + ("AAAA" if not account.access_token.endswith("AAAA") else "BBBB"),
    }


async def test_me_refuses_every_bad_token(system: System, account: Account) -> None:
    assert (await system.http.get("/v1/users/me")).status_code == 401
    assert (await system.http.get("/v1/users/me", headers={"Authorization": "Basic abc"})).status_code == 401
    for name, token in bad_tokens(account).items():
        response = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        patched = await system.http.patch(
            "/v1/users/me", headers={"Authorization": f"Bearer {token}"}, json={"display_name": "Hacked"}
        )
        assert patched.status_code == 401, name
    me = await system.http.get("/v1/users/me", headers=account.auth)
    assert me.json()["display_name"] == "Test User"


async def test_the_token_is_checked_before_the_body_and_the_query(system: System, account: Account) -> None:
    """Without a valid token a caller learns nothing of the input rules: 401, never 422 or 400."""
    tampered = {"Authorization": f"Bearer {bad_tokens(account)['tampered']}"}
    for headers in ({}, tampered):
        invalid_body = await system.http.patch("/v1/users/me", headers=headers, json={"display_name": ""})
        assert invalid_body.status_code == 401, invalid_body.text
        not_json = await system.http.post(
            "/v1/auth/password", headers={**headers, "Content-Type": "application/json"}, content=b"{"
        )
        assert not_json.status_code == 401, not_json.text
        bad_query = await system.http.get("/v1/users/me/activity?limit=0", headers=headers)
        assert bad_query.status_code == 401, bad_query.text
    # The same inputs with a valid token reach their validation.
    assert (await system.http.patch("/v1/users/me", headers=account.auth, json={"display_name": ""})).status_code == 422
    assert (await system.http.get("/v1/users/me/activity?limit=0", headers=account.auth)).status_code == 422


async def test_a_valid_token_signed_by_the_auth_key_is_accepted(system: System, account: Account) -> None:
    """The forged-token cases above fail for their flaw, not because every crafted token fails."""
    token = signed(claims(account))
    response = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_control_characters_in_a_user_agent_do_not_break_login(system: System, account: Account) -> None:
    response = await system.http.post(
        "/v1/auth/login",
        json={"email": account.email, "password": PASSWORD},
        headers={"User-Agent": "curl/8\x01 evil\x7f"},
    )
    assert response.status_code == 200, response.text
