"""Signing key rotation with everything running: no restart of auth or the gateway."""

import asyncio
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from handlers.auth.keys import KeyRing, write_new_key
from tests.e2e.conftest import PASSWORD, register_and_login
from tests.harness import System, eventually

pytestmark = pytest.mark.e2e


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def access_token(system: System, email: str) -> str:
    response = await system.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def accepted(system: System, token: str) -> bool:
    response = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


async def test_a_rotated_key_signs_at_once_and_old_tokens_stay_valid(system: System, tmp_path: Path) -> None:
    account = await register_and_login(system)
    keys = tmp_path / "auth-keys"
    first = KeyRing.load(None, keys, generate=True).current.kid
    # auth, from now on reading its keys from a folder, as in production.
    system.settings["auth"] = system.settings["auth"].model_copy(
        update={"signing_key": None, "signing_keys_dir": keys, "keys_reload_interval": 0.1}
    )
    await system.restart("auth")
    old = await access_token(system, account.email)
    assert kid_of(old) == first
    await eventually(lambda: accepted(system, old), timeout=15, what="the gateway to learn the first key")

    rotated = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "from bus.cli import main; main()", "rotate-keys"],
        env={"AUTH_SIGNING_KEYS_DIR": str(keys), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rotated.returncode == 0, rotated.stderr
    second = KeyRing.load(None, keys, generate=False).current.kid
    assert second != first

    async def signed_with_the_new_key() -> str | None:
        token = await access_token(system, account.email)
        return token if kid_of(token) == second else None

    new = await eventually(signed_with_the_new_key, what="auth to sign with the new key without a restart")
    await eventually(lambda: accepted(system, new), timeout=15, what="the gateway to accept the new key")
    assert await accepted(system, old)  # signed by the previous key, valid until it expires
    jwks = await system.http.get("/.well-known/jwks.json")
    assert [key["kid"] for key in jwks.json()["keys"]][:2] == [second, first]


async def test_a_token_of_a_key_nobody_published_is_refused(system: System, tmp_path: Path) -> None:
    account = await register_and_login(system)
    stranger = KeyRing.load(write_new_key(tmp_path).read_text(), tmp_path, generate=False)
    forged, _ = stranger.sign({"iss": "busway-auth", "aud": "busway", "sub": account.user_id, "sid": "s"}, 60)
    response = await system.http.get("/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["detail"] == "The access token is signed with an unknown key."
