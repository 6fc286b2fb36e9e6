"""What the gateway holds while it runs: bus client, Redis, token verifier, metrics. Built in lifespan."""

import asyncio
import contextlib
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from loguru import logger
from redis.asyncio import Redis

from bus.broker import create_redis, instance_id
from gateway.legacy import LegacyProxy, load_route_table
from gateway.limits import Limits
from gateway.metrics import GatewayMetrics
from gateway.resilience import Downstreams, ResilientBusClient
from gateway.settings import GatewaySettings
from gateway.tokens import Claims, RevokedSessions, TokenVerifier, bearer_token
from schemas import streams
from schemas.commands import GetJwks
from schemas.errors import ReplyError
from schemas.replies import Jwks

SERVICE = "gateway"
BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]
"""The OpenAPI security requirement of the routes for signed-in callers."""
_CLAIMS = "busway.claims"
"""Where a request's verified claims are kept in its ASGI scope state."""


class Gateway:
    """The gateway's connections; created by ``start``, released by ``stop``."""

    def __init__(self, settings: GatewaySettings, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or instance_id(SERVICE)
        self._redis: Redis | None = None
        self._bus: ResilientBusClient | None = None
        self.metrics = GatewayMetrics()
        self.downstreams = Downstreams(settings, self.metrics)
        self._keys_task: asyncio.Task[None] | None = None
        self._revoked_sessions: RevokedSessions | None = None
        self.legacy = (
            LegacyProxy(
                str(settings.legacy_url),
                load_route_table(settings.routes_file),
                timeout=settings.legacy_timeout,
                connect_timeout=settings.legacy_connect_timeout,
            )
            if settings.legacy_url is not None
            else None
        )
        self._limits: Limits | None = None
        self.verifier = TokenVerifier(
            self._fetch_jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway,
            revoked=self._session_revoked,
        )

    @property
    def bus(self) -> ResilientBusClient:
        """The request-reply client (after start)."""
        if self._bus is None:
            msg = "the gateway has not started"
            raise RuntimeError(msg)
        return self._bus

    @property
    def redis(self) -> Redis:
        """A Redis client for readiness checks (after start)."""
        if self._redis is None:
            msg = "the gateway has not started"
            raise RuntimeError(msg)
        return self._redis

    @property
    def limits(self) -> Limits:
        """Rate limits and login lockout (after start)."""
        if self._limits is None:
            msg = "the gateway has not started"
            raise RuntimeError(msg)
        return self._limits

    async def claims(self, request: ASGIConnection[Any, Any, Any, Any]) -> Claims:
        """The caller of ``request``, from a valid bearer token; 401 otherwise.

        Verified once per request: ``signed_in`` checks first, and the route handler then
        gets the same claims.
        """
        state = request.scope.setdefault("state", {})
        claims: Claims | None = state.get(_CLAIMS)
        if claims is None:
            claims = state[_CLAIMS] = await self.verifier.verify(bearer_token(request.headers.get("authorization")))
        return claims

    async def signed_in(self, request: Request[Any, Any, Any]) -> None:
        """401 without a valid token: the bearer routes' ``before_request``, ahead of their body and query."""
        await self.claims(request)

    def bearer(self) -> dict[str, Any]:
        """Route-decorator arguments of a route for signed-in callers (documented as such).

        The token is checked in ``before_request``, which Litestar runs before it reads the
        body or the query: a caller without one learns nothing of their rules (401 first).
        Not a guard: Litestar copies the route handler for every guard call (8 µs here).
        """
        return {"security": BEARER, "before_request": self.signed_in}

    async def _fetch_jwks(self) -> Jwks:
        return await self.bus.request(streams.AUTH_JWKS, GetJwks(), Jwks)

    async def _session_revoked(self, session_id: str) -> bool:
        if self._revoked_sessions is None:
            msg = "the gateway has not started"
            raise RuntimeError(msg)
        return await self._revoked_sessions(session_id)

    async def start(self) -> None:
        """Connect to Redis, open the reply inbox, fetch the signing keys if auth is up."""
        self._redis = create_redis(self.settings.bus)
        self._bus = ResilientBusClient(self.settings.bus, self.instance, producer=SERVICE, downstreams=self.downstreams)
        self._limits = Limits(self._bus.connection, self.settings)
        self._revoked_sessions = RevokedSessions(self._bus.connection, self.settings.bus)
        await self._bus.start()
        # In the background: the auth service may start after the gateway.
        self._keys_task = asyncio.create_task(self._load_keys(), name="load signing keys")

    async def _load_keys(self) -> None:
        try:
            await self.verifier.refresh(force=True)
        except ReplyError as exc:
            logger.warning("signing keys not loaded yet ({}); will retry on first token", exc.reply.message)

    async def stop(self) -> None:
        """Close everything start opened."""
        if self.legacy is not None:
            await self.legacy.close()
        if self._keys_task is not None:
            self._keys_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keys_task
        if self._limits is not None:
            await self._limits.stop()  # on the bus's connection: before it closes
        if self._bus is not None:
            await self._bus.stop()
        if self._redis is not None:
            await self._redis.aclose()


def gateway_of(state: State) -> Gateway:
    """The running gateway from Litestar's app state."""
    gateway: Gateway = state.gateway
    return gateway
