"""The comparison variants of ``just bench``, one process each: ``python -m bench.apps NAME``.

Every variant serves the same four routes, doing the same domain work with the same
service classes busway's handlers use, and the same checks at its edge as busway's
gateway (the login lockout and the revoked-session check, on the same Redis), so only
the transport differs:

- ``direct``: the monolith. One Litestar app calls the services in-process.
- ``proxy``: the classic gateway: Litestar forwarding over HTTP (httpx) to ``direct``.
- ``fs-gateway`` + ``fs-handler``: Litestar calling FastStream's ``broker.request`` on a
  Redis stream, answered by a FastStream subscriber (FastStream's defaults throughout).

Settings come from the environment: USERS_DATABASE_URL, AUTH_DATABASE_URL,
AUTH_SIGNING_KEY, REDIS_URL, BUS_PREFIX, BENCH_PORT, BENCH_UPSTREAM.
"""

import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import uvicorn
from faststream.redis import RedisBroker, StreamSub
from litestar import Litestar, Request, Response, get, post
from litestar.params import JSONBody
from pydantic import SecretStr

from bus.process import freeze_heap
from bus.resp import RespConnection
from db.engine import create_engine, session_factory
from gateway.auth_routes import client_of
from gateway.bodies import LoginBody
from gateway.limits import Limits
from gateway.problems import EXCEPTION_HANDLERS
from gateway.settings import GatewaySettings
from gateway.tokens import Claims, RevokedSessions, TokenVerifier, bearer_token
from handlers.auth.keys import KeyRing, SigningKey
from handlers.auth.passwords import PasswordHasher
from handlers.auth.service import AuthService, TokenSettings
from handlers.auth.settings import AuthSettings
from handlers.users.service import UsersService
from schemas.commands import LogIn, RegisterUser
from schemas.envelope import Trace
from schemas.errors import ErrorCode, ErrorReply, ReplyError
from schemas.events import RegistrationStarted, UserCreated
from schemas.replies import Jwks, Pong, Registration, TokenPair, UserProfile

ROUTES = ("/v1/ping", "/v1/users/me", "/v1/auth/login", "/v1/auth/register")


Login = Callable[[LogIn], Awaitable[TokenPair]]


@dataclass
class Domain:
    """The auth and users services over their databases, with no bus; the gateway's checks."""

    auth: AuthService
    users: UsersService
    verifier: TokenVerifier
    edge: GatewaySettings
    limits: Limits
    close: Callable[[], Awaitable[None]]

    async def register(self, cmd: RegisterUser) -> Registration:
        """The registration saga, each step called directly."""
        trace = Trace(correlation_id=uuid.uuid4().hex)
        started = await self.auth.register(cmd, trace)
        event = RegistrationStarted(
            registration_id=started.registration_id,
            user_id=started.user_id,
            email=cmd.email,
            display_name=cmd.display_name,
        )
        await self.users.on_registration_started(event, uuid.uuid4().hex, trace)
        profile = await self.users.get(started.user_id)
        created = UserCreated(
            registration_id=started.registration_id,
            user_id=profile.id,
            email=profile.email,
            display_name=profile.display_name,
            created_at=profile.created_at,
        )
        outcome = await self.auth.on_user_created(created, uuid.uuid4().hex, trace)
        return outcome[0] if outcome else started

    async def me(self, authorization: str | None) -> UserProfile:
        """Check the token, read the profile."""
        claims: Claims = await self.verifier.verify(bearer_token(authorization))
        return await self.users.get(claims.user_id)

    async def login(self, command: LogIn) -> TokenPair:
        """Verify the password, open a session, sign a token."""
        return await self.auth.login(command, Trace(correlation_id=uuid.uuid4().hex))

    async def guarded_login(self, body: LoginBody, request: Request[Any, Any, Any], login: Login) -> TokenPair:
        """``login`` at an HTTP edge, under the gateway's lockout (``Limits.login``)."""
        user_agent, ip = client_of(request, self.edge)
        command = LogIn(email=body.email, password=body.password, user_agent=user_agent, ip=ip)
        return await self.limits.login(body.email, ip, lambda: login(command))


def domain() -> Domain:
    """Build the services the way the handlers do, from the same settings."""
    settings = AuthSettings(signing_key=SecretStr(os.environ["AUTH_SIGNING_KEY"]))
    auth_engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    users_engine = create_engine(os.environ["USERS_DATABASE_URL"], pool_size=settings.database_pool_size)
    ring = KeyRing([SigningKey.from_pem(os.environ["AUTH_SIGNING_KEY"].encode())])
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        concurrency=settings.hashing_concurrency,
        niceness=settings.hashing_niceness,
        release_after=settings.hashing_release_after,
    )
    tokens = TokenSettings(
        issuer=settings.token_issuer, audience=settings.token_audience, ttl=settings.access_token_ttl
    )
    edge = GatewaySettings()
    redis = RespConnection(edge.bus.redis_url, client_name=f"bench:{os.getpid()}")
    limits = Limits(redis, edge)

    async def jwks() -> Jwks:
        return Jwks(keys=tuple(ring.jwks()))

    async def close() -> None:
        await limits.stop()
        await redis.stop()
        await auth_engine.dispose()
        await users_engine.dispose()

    return Domain(
        auth=AuthService(session_factory(auth_engine), hasher, ring, tokens),
        users=UsersService(session_factory(users_engine)),
        verifier=TokenVerifier(
            jwks,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            revoked=RevokedSessions(redis, edge.bus),
        ),
        edge=edge,
        limits=limits,
        close=close,
    )


def registration_response(registration: Registration) -> Response[Any]:
    """201 with the user, or the saga's error."""
    if registration.user is None:
        raise ReplyError(registration.reason_message or "failed", code=registration.reason or ErrorCode.INTERNAL)
    return Response(registration.user, status_code=201)


def direct_app() -> Litestar:
    """The monolith: routes call the services in-process."""
    work = domain()

    @get("/v1/ping")
    async def ping() -> Pong:
        return Pong(service="users")

    @get("/v1/users/me")
    async def me(request: Request[Any, Any, Any]) -> UserProfile:
        return await work.me(request.headers.get("authorization"))

    @post("/v1/auth/login", status_code=200)
    async def login(data: JSONBody[LoginBody], request: Request[Any, Any, Any]) -> TokenPair:
        return await work.guarded_login(data, request, work.login)

    @post("/v1/auth/register")
    async def register(data: JSONBody[RegisterUser]) -> Response[Any]:
        return registration_response(await work.register(data))

    return Litestar(
        [ping, me, login, register],
        on_shutdown=[work.close],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )


def proxy_app() -> Litestar:
    """The HTTP gateway: forwards each request to the upstream service over HTTP."""
    upstream = os.environ["BENCH_UPSTREAM"]
    # Idle connections let go before uvicorn closes them at its keep-alive timeout (5 s): at
    # the same 5 s, a request sent as the upstream closes failed now and then (500).
    pool = httpx.Limits(max_connections=64, keepalive_expiry=4)
    client = httpx.AsyncClient(base_url=upstream, limits=pool, timeout=30)

    async def forward(request: Request[Any, Any, Any]) -> Response[bytes]:
        headers = {k: v for k, v in request.headers.items() if k in {"authorization", "content-type"}}
        upstream_response = await client.request(
            request.method, request.url.path, content=await request.body(), headers=headers
        )
        return Response(
            upstream_response.content,
            status_code=upstream_response.status_code,
            media_type=upstream_response.headers.get("content-type", "application/json"),
        )

    @get("/v1/ping")
    async def ping(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await forward(request)

    @get("/v1/users/me")
    async def me(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await forward(request)

    @post(["/v1/auth/login", "/v1/auth/register"])
    async def writes(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await forward(request)

    return Litestar([ping, me, writes], on_shutdown=[client.aclose], logging_config=None)


def _stream(name: str) -> str:
    return f"{os.environ.get('BUS_PREFIX', '')}fsbench.{name}"


def fs_handler_broker() -> RedisBroker:
    """FastStream subscribers doing the domain work; replies are FastStream's own."""
    broker = RedisBroker(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    work = domain()
    consumer = f"fs-{os.getpid()}"

    def sub(name: str) -> StreamSub:
        return StreamSub(_stream(name), group="fsbench", consumer=consumer)

    @broker.subscriber(stream=sub("ping"), max_workers=16)
    async def ping(_: dict[str, Any]) -> dict[str, Any]:
        return {"service": "users"}

    @broker.subscriber(stream=sub("me"), max_workers=16)
    async def me(body: dict[str, Any]) -> dict[str, Any]:
        return (await work.users.get(body["user_id"])).model_dump(mode="json")

    @broker.subscriber(stream=sub("login"), max_workers=16)
    async def login(command: LogIn) -> dict[str, Any]:
        try:
            return (await work.login(command)).model_dump(mode="json")
        except ReplyError as exc:
            return {"error": exc.reply.model_dump(mode="json")}

    @broker.subscriber(stream=sub("register"), max_workers=16)
    async def register(body: RegisterUser) -> dict[str, Any]:
        try:
            registration = await work.register(body)
        except ReplyError as exc:
            return {"error": exc.reply.model_dump(mode="json")}
        return registration.user.model_dump(mode="json") if registration.user else {"error": "failed"}

    return broker


def fs_gateway_app() -> Litestar:
    """Litestar calling ``broker.request`` per HTTP request (a Pub/Sub subscription each)."""
    broker = RedisBroker(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    work = domain()

    async def call(name: str, body: dict[str, Any], ok: int = 200) -> Response[Any]:
        return Response(await ask(name, body), status_code=ok)

    async def ask(name: str, body: dict[str, Any]) -> Any:
        reply = await broker.request(body, stream=_stream(name), timeout=5)
        payload = msgspec.json.decode(reply.body)
        if isinstance(payload, dict) and "error" in payload:
            error = ErrorReply.model_validate(payload["error"])
            raise ReplyError.from_reply(error)
        return payload

    async def ask_login(command: LogIn) -> TokenPair:
        return TokenPair.model_validate(await ask("login", command.model_dump(mode="json")))

    @get("/v1/ping")
    async def ping() -> Response[Any]:
        return await call("ping", {})

    @get("/v1/users/me")
    async def me(request: Request[Any, Any, Any]) -> Response[Any]:
        claims = await work.verifier.verify(bearer_token(request.headers.get("authorization")))
        return await call("me", {"user_id": claims.user_id})

    @post("/v1/auth/login", status_code=200)
    async def login(data: JSONBody[LoginBody], request: Request[Any, Any, Any]) -> TokenPair:
        return await work.guarded_login(data, request, ask_login)

    @post("/v1/auth/register")
    async def register(data: JSONBody[RegisterUser]) -> Response[Any]:
        return await call("register", data.model_dump(), ok=201)

    return Litestar(
        [ping, me, login, register],
        on_startup=[broker.start],
        on_shutdown=[broker.stop, work.close],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,
    )


async def _run_handler() -> None:
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    broker = fs_handler_broker()
    await broker.start()
    freeze_heap()  # as busway's processes do, once started
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()


def main() -> None:
    """Run the variant named on the command line."""
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    apps: dict[str, Callable[[], Litestar]] = {"direct": direct_app, "proxy": proxy_app, "fs-gateway": fs_gateway_app}
    if name == "fs-handler":
        import uvloop  # noqa: PLC0415

        uvloop.run(_run_handler())
    elif name in apps:
        port = int(os.environ.get("BENCH_PORT", "18001"))
        app = apps[name]()
        app.on_startup.append(freeze_heap)  # as busway's processes do, once started
        uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    else:
        raise SystemExit(f"usage: python -m bench.apps {{{'|'.join([*apps, 'fs-handler'])}}}")


if __name__ == "__main__":
    main()
