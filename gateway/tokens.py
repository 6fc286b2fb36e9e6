"""Access tokens checked at the edge, locally, against the auth service's public keys.

The keys (JWKS) come over the bus at start and again when a token names an unknown
``kid`` (rate-limited), so a key rotation needs no gateway restart. A token of a revoked
session (logout, password change, theft detection) is refused before it expires: auth
marks the session in Redis, and each check asks Redis, never the bus.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK
from litestar.exceptions import NotAuthorizedException
from loguru import logger
from redis.exceptions import RedisError

from bus.resp import RespConnection
from bus.settings import BusSettings
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Jwks
from schemas.streams import revoked_session

ALGORITHMS = ["EdDSA"]
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "aud", "iss", "sid"]
ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Claims:
    """Who a verified token speaks for."""

    user_id: str
    session_id: str
    token_id: str
    expires_at: int
    roles: tuple[str, ...] = ()
    """From the token's ``roles`` claim: as they were at its login or latest refresh."""

    @property
    def admin(self) -> bool:
        """Whether the token carries the admin role."""
        return ADMIN_ROLE in self.roles


def unauthorized(detail: str) -> NotAuthorizedException:
    """401 with the Bearer challenge."""
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class RevokedSessions:
    """The revoked-session keys auth writes (``revoked.<sid>``), read with one EXISTS per check.

    The EXISTS of every request in one event-loop turn travel in one write on the
    gateway's hot-path connection. Redis unreachable means the check cannot be made: 503,
    never a token let through.
    """

    def __init__(self, connection: RespConnection, settings: BusSettings) -> None:
        self._connection = connection
        self._settings = settings

    async def __call__(self, session_id: str) -> bool:
        """Whether ``session_id`` has been revoked."""
        key = self._settings.name(revoked_session(session_id))

        try:
            [found] = await self._connection.execute(("EXISTS", key))
        except (RedisError, OSError) as exc:
            found = exc
        if isinstance(found, Exception):
            logger.warning("cannot check for a revoked session: {!r}", found)
            raise ReplyError("The session cannot be checked right now.", code=ErrorCode.UNAVAILABLE)
        return bool(found)


class TokenVerifier:
    """Verifies access tokens with cached public keys, and refuses revoked sessions."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[Jwks]],
        *,
        issuer: str,
        audience: str,
        leeway: int = 30,
        min_refresh_interval: float = 5.0,
        revoked: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """``revoked(session_id)`` says whether a session has ended; None checks nothing."""
        self._fetch = fetch_jwks
        self._revoked = revoked
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._min_refresh_interval = min_refresh_interval
        self._keys: dict[str, PyJWK] = {}
        self._jwks: list[dict[str, Any]] = []
        self._attempted_at = float("-inf")
        self._completed_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def jwks(self) -> list[dict[str, Any]]:
        """The public keys as last fetched."""
        return self._jwks

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the keys, at most once per ``min_refresh_interval`` unless forced."""
        requested = time.monotonic()
        async with self._lock:
            # Single flight: who waited while another caller fetched takes that outcome.
            if self._completed_at >= requested:
                return
            if not force and time.monotonic() - self._attempted_at < self._min_refresh_interval:
                return
            self._attempted_at = time.monotonic()
            try:
                jwks = await self._fetch()
            finally:
                self._completed_at = time.monotonic()
            self._jwks = list(jwks.keys)
            self._keys = {key["kid"]: PyJWK(key) for key in jwks.keys if "kid" in key}
            logger.info("loaded {} signing keys", len(self._keys))

    async def _key(self, kid: str) -> PyJWK | None:
        if kid not in self._keys:
            try:
                await self.refresh()
            except Exception as exc:  # auth unreachable: the token cannot be checked
                logger.warning("could not refresh signing keys: {!r}", exc)
        return self._keys.get(kid)

    async def verify(self, token: str) -> Claims:
        """The claims of a valid token; 401 for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("The access token is malformed.") from None
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized("The access token is not signed with an accepted algorithm.")
        key = await self._key(str(header.get("kid", "")))
        if key is None:
            raise unauthorized("The access token is signed with an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("The access token has expired.") from None
        except jwt.InvalidTokenError:
            raise unauthorized("The access token is not valid.") from None
        session_id = str(claims["sid"])
        # Last: only a genuine token costs a trip to Redis.
        if self._revoked is not None and await self._revoked(session_id):
            raise unauthorized("The session of this access token has ended.")
        return Claims(
            user_id=str(claims["sub"]),
            session_id=session_id,
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            roles=_roles(claims.get("roles")),
        )


def _roles(value: Any) -> tuple[str, ...]:
    """The roles claim; anything but a list of strings grants nothing."""
    if not isinstance(value, list):
        return ()
    return tuple(role for role in value if isinstance(role, str))


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; 401 when absent or malformed."""
    if not authorization:
        raise NotAuthorizedException(detail="An access token is required.", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()
