"""/v1/auth/*: registration, its status, login; and the public keys."""

from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from bus.correlation import new_id
from bus.rpc import BusClient, outcome_key
from gateway.bodies import LoginBody, RegistrationPending
from gateway.resilience import ResilientBusClient
from gateway.settings import GatewaySettings
from gateway.state import gateway_of
from schemas import streams
from schemas.commands import GetRegistration, LogIn, RegisterUser
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Registration, RegistrationState, TokenPair, UserProfile

PROBLEM = "application/problem+json"


def registration_response(registration: Registration) -> Response[UserProfile | RegistrationPending]:
    """201 with the user, 202 while pending; a failed saga is raised as its error."""
    if registration.state == RegistrationState.COMPLETED and registration.user is not None:
        return Response(registration.user, status_code=201, headers={"Location": f"/v1/users/{registration.user.id}"})
    if registration.state == RegistrationState.FAILED:
        raise ReplyError(
            registration.reason_message or "The registration failed.",
            code=registration.reason or ErrorCode.INTERNAL,
            extra={"registration_id": registration.registration_id},
        )
    status_url = f"/v1/auth/registrations/{registration.registration_id}"
    pending = RegistrationPending(
        registration_id=registration.registration_id, status=registration.state, status_url=status_url
    )
    return Response(pending, status_code=202, headers={"Location": status_url})


@post(
    "/v1/auth/register",
    status_code=201,
    summary="Create an account",
    responses={
        202: ResponseSpec(RegistrationPending, description="The saga has not finished in time; poll status_url."),
        409: ResponseSpec(None, description="The email is taken.", media_type=PROBLEM),
        422: ResponseSpec(None, description="Invalid email, password or name.", media_type=PROBLEM),
    },
)
async def register(
    data: JSONBody[RegisterUser],
    bus: NamedDependency[ResilientBusClient],
    settings: NamedDependency[GatewaySettings],
) -> Response[UserProfile | RegistrationPending]:
    """Run the registration saga and wait a bounded time for its outcome."""
    message_id = new_id()
    reply = bus.expect(message_id)
    outcome = bus.expect(outcome_key(message_id))

    async def first_reply(timeout: float) -> Registration:
        await bus.send(streams.AUTH_REGISTER, data, message_id=message_id, timeout=timeout)
        return await bus.wait(reply, Registration, timeout=timeout, what=streams.AUTH_REGISTER)

    try:
        # Under auth's breaker and bulkhead; sent once (not idempotent).
        downstream = bus.downstreams.of(streams.AUTH_REGISTER)
        registration = await downstream.call(streams.AUTH_REGISTER, first_reply, idempotent=False)
        try:
            registration = await bus.wait(
                outcome, Registration, timeout=settings.registration_wait, what="the registration"
            )
        except ReplyError as exc:
            if exc.reply.code != ErrorCode.UNAVAILABLE:
                raise
    finally:
        bus.forget(message_id)
        bus.forget(outcome_key(message_id))
    return registration_response(registration)


@get("/v1/auth/registrations/{registration_id:str}", summary="A registration saga's state")
async def get_registration(registration_id: FromPath[str], bus: NamedDependency[BusClient]) -> Registration:
    """pending, completed (with the user) or failed (with the reason)."""
    return await bus.request(
        streams.AUTH_GET_REGISTRATION, GetRegistration(registration_id=registration_id), Registration
    )


@post(
    "/v1/auth/login",
    status_code=200,
    summary="Log in",
    responses={401: ResponseSpec(None, description="Unknown email or wrong password.", media_type=PROBLEM)},
)
async def login(
    data: JSONBody[LoginBody], request: Request[Any, Any, State], bus: NamedDependency[BusClient]
) -> TokenPair:
    """An access token (JWT) and a refresh token for a valid email and password."""
    user_agent = request.headers.get("user-agent")
    command = LogIn(
        email=data.email,
        password=data.password,
        user_agent="".join(c for c in user_agent[:500] if c.isprintable()) if user_agent else None,
        ip=request.client.host if request.client else None,
    )
    return await bus.request(streams.AUTH_LOGIN, command, TokenPair)


@get("/.well-known/jwks.json", summary="Public signing keys", cache_control=None)
async def jwks(state: State) -> Response[dict[str, Any]]:
    """The keys access tokens are signed with (RFC 7517)."""
    verifier = gateway_of(state).verifier
    if not verifier.jwks:
        await verifier.refresh()
    if not verifier.jwks:
        raise ReplyError("The signing keys are not available yet.", code=ErrorCode.UNAVAILABLE)
    return Response({"keys": verifier.jwks}, headers={"Cache-Control": "public, max-age=300"})


ROUTES = [register, get_registration, login, jwks]
