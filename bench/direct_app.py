"""The monolith baseline: GET /v1/users/me served in-process by one Litestar app.

Same work as the bus path: verify the access token locally, read one profile by
primary key, return it. Run with ``python -m bench.direct_app`` (env: USERS_DATABASE_URL,
AUTH_SIGNING_KEY, BENCH_PORT).
"""

import os
from typing import Any

import uvicorn
from litestar import Litestar, Request, get
from litestar.exceptions import NotFoundException

from db.engine import create_engine, session_factory
from gateway.tokens import TokenVerifier, bearer_token
from handlers.auth.keys import KeyRing, SigningKey
from handlers.users.models import Profile
from handlers.users.service import profile_of
from schemas.replies import Jwks, UserProfile


def create_app() -> Litestar:
    """The baseline app."""
    engine = create_engine(os.environ["USERS_DATABASE_URL"], pool_size=10)
    sessions = session_factory(engine)
    ring = KeyRing([SigningKey.from_pem(os.environ["AUTH_SIGNING_KEY"].encode())])

    async def jwks() -> Jwks:
        return Jwks(keys=tuple(ring.jwks()))

    verifier = TokenVerifier(jwks, issuer="busway-auth", audience="busway")

    @get("/v1/users/me")
    async def me(request: Request[Any, Any, Any]) -> UserProfile:
        claims = await verifier.verify(bearer_token(request.headers.get("authorization")))
        async with sessions() as session:
            row = await session.get(Profile, claims.user_id)
        if row is None:
            raise NotFoundException
        return profile_of(row)

    return Litestar([me], on_shutdown=[engine.dispose], logging_config=None)


if __name__ == "__main__":
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ.get("BENCH_PORT", "18001")),
        log_config=None,
        access_log=False,
    )
