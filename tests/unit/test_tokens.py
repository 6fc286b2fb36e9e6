"""The gateway's token check, without a bus: keys come from a stub fetcher."""

import asyncio
import time
import uuid
from typing import Any

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException

from bus.resp import RespConnection
from bus.settings import BusSettings
from gateway.tokens import RevokedSessions, TokenVerifier, bearer_token
from handlers.auth.keys import KeyRing, SigningKey, generate_pem
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Jwks


def token(ring: KeyRing, **claims: Any) -> str:
    base = {"iss": "iss", "aud": "aud", "sub": "u1", "sid": "s1"}
    base.update(claims)
    signed, _ = ring.sign(base, ttl=60)
    return signed


class Fetcher:
    def __init__(self, *rings: KeyRing) -> None:
        self.rings = list(rings)
        self.calls = 0

    async def __call__(self) -> Jwks:
        self.calls += 1
        return Jwks(keys=tuple(key for ring in self.rings for key in ring.jwks()))


async def test_valid_token_gives_its_claims() -> None:
    ring = KeyRing([SigningKey.from_pem(generate_pem())])
    verifier = TokenVerifier(Fetcher(ring), issuer="iss", audience="aud")
    claims = await verifier.verify(token(ring))
    assert (claims.user_id, claims.session_id) == ("u1", "s1")
    assert claims.expires_at > time.time()


async def test_unknown_kid_refreshes_the_keys_once_per_interval() -> None:
    old = KeyRing([SigningKey.from_pem(generate_pem())])
    new = KeyRing([SigningKey.from_pem(generate_pem())])
    fetcher = Fetcher(old)
    verifier = TokenVerifier(fetcher, issuer="iss", audience="aud", min_refresh_interval=60)
    await verifier.refresh(force=True)
    fetcher.rings.append(new)  # a key rotation on the auth side
    with pytest.raises(NotAuthorizedException):
        await verifier.verify(token(new))  # refreshed within the interval: not yet seen
    fast = TokenVerifier(fetcher, issuer="iss", audience="aud", min_refresh_interval=0)
    assert (await fast.verify(token(new))).user_id == "u1"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "other"},
        {"iss": "other"},
        {"exp": int(time.time()) - 120, "iat": int(time.time()) - 240},
        {"sid": None},
    ],
)
async def test_invalid_claims_are_refused(claims: dict[str, Any]) -> None:
    key = SigningKey.from_pem(generate_pem())
    now = int(time.time())
    payload = {"iss": "iss", "aud": "aud", "sub": "u", "sid": "s", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    raw = jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": key.kid})
    verifier = TokenVerifier(Fetcher(KeyRing([key])), issuer="iss", audience="aud", leeway=0)
    with pytest.raises(NotAuthorizedException):
        await verifier.verify(raw)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(NotAuthorizedException):
            bearer_token(bad)


async def test_concurrent_refreshes_share_one_fetch() -> None:
    ring = KeyRing([SigningKey.from_pem(generate_pem())])
    fetcher = Fetcher(ring)

    async def slow() -> Jwks:
        await asyncio.sleep(0.05)
        return await fetcher()

    verifier = TokenVerifier(slow, issuer="iss", audience="aud")
    await asyncio.gather(*(verifier.refresh(force=True) for _ in range(5)))
    assert fetcher.calls == 1
    assert verifier.jwks == ring.jwks()


class Revoked:
    """A stand-in for the Redis set: the sessions given are revoked; records what was asked."""

    def __init__(self, *session_ids: str) -> None:
        self.session_ids = set(session_ids)
        self.asked: list[str] = []

    async def __call__(self, session_id: str) -> bool:
        self.asked.append(session_id)
        return session_id in self.session_ids


async def test_a_revoked_sessions_token_is_refused_and_others_pass() -> None:
    ring = KeyRing([SigningKey.from_pem(generate_pem())])
    revoked = Revoked("s-ended")
    verifier = TokenVerifier(Fetcher(ring), issuer="iss", audience="aud", revoked=revoked)
    with pytest.raises(NotAuthorizedException) as refused:
        await verifier.verify(token(ring, sid="s-ended"))
    assert refused.value.detail == "The session of this access token has ended."
    assert (await verifier.verify(token(ring, sid="s-live"))).session_id == "s-live"
    assert revoked.asked == ["s-ended", "s-live"]


async def test_only_genuine_tokens_cost_a_revocation_check() -> None:
    ring = KeyRing([SigningKey.from_pem(generate_pem())])
    other = KeyRing([SigningKey.from_pem(generate_pem())])
    revoked = Revoked()
    verifier = TokenVerifier(Fetcher(ring), issuer="iss", audience="aud", revoked=revoked)
    for bad in (token(ring, aud="other"), token(other), "garbage"):
        with pytest.raises(NotAuthorizedException):
            await verifier.verify(bad)
    assert revoked.asked == []


async def test_an_unreachable_revocation_set_refuses_with_503_not_a_pass() -> None:
    ring = KeyRing([SigningKey.from_pem(generate_pem())])
    # Nothing listens on port 1: the check cannot be made.
    connection = RespConnection("redis://127.0.0.1:1", connect_timeout=1)
    try:
        verifier = TokenVerifier(
            Fetcher(ring), issuer="iss", audience="aud", revoked=RevokedSessions(connection, BusSettings())
        )
        with pytest.raises(ReplyError) as failed:
            await verifier.verify(token(ring))
        assert failed.value.reply.code == ErrorCode.UNAVAILABLE
    finally:
        await connection.stop()
