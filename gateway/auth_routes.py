"""/v1/auth/*: registration, login, sessions, passwords; and the public keys."""

import time
from functools import partial
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from gateway.bodies import LoginBody, PasswordChangeBody, RefreshBody, RegistrationPending, ResetRequested
from gateway.limits import client_ip
from gateway.settings import GatewaySettings
from gateway.state import Gateway
from schemas import streams
from schemas.commands import (
    ChangePassword,
    ConfirmPasswordReset,
    GetRegistration,
    ListSessions,
    LogIn,
    LogOut,
    RefreshTokens,
    RegisterUser,
    RequestPasswordReset,
    RevokeSession,
)
from schemas.envelope import DEADLINE
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Done, Registration, RegistrationState, SessionList, TokenPair, UserProfile

PROBLEM = "application/problem+json"

NO_SESSION = ResponseSpec(None, description="No valid access token, or its session has ended.", media_type=PROBLEM)

TOO_MANY = ResponseSpec(
    None, description="Rate limited (per client IP); Retry-After says when to try again.", media_type=PROBLEM
)

PASSWORD_RESET_DEADLINE = 300
"""Seconds auth has to take up a reset request: nobody waits for it, so it may wait for auth."""


def client_of(request: Request[Any, Any, Any], settings: GatewaySettings) -> tuple[str | None, str | None]:
    """The client's user agent (printable, at most 500 characters) and IP address (see client_ip)."""
    user_agent = request.headers.get("user-agent")
    printable = "".join(c for c in user_agent[:500] if c.isprintable()) if user_agent else None
    return printable, client_ip(request, settings)


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


def routes(gateway: Gateway) -> list[HTTPRouteHandler]:
    """The account routes of ``gateway`` (see ``gateway.app`` on why routes close over it)."""
    settings = gateway.settings

    def limited(route: str) -> dict[str, Any]:
        """Route-decorator arguments that put a route under its per-IP rate limit.

        Counted in ``before_request``, which Litestar runs before it reads the body: a
        client over the limit gets 429 whatever it sent. Not a guard: Litestar copies
        the route handler for every guard call (as ``Gateway.bearer`` says).
        """

        async def rate_limited(request: Request[Any, Any, Any]) -> None:
            await gateway.limits.hit(route, client_ip(request, settings))

        return {"before_request": rate_limited}

    bearer = gateway.bearer()

    @post(
        "/v1/auth/register",
        status_code=201,
        summary="Create an account",
        responses={
            202: ResponseSpec(RegistrationPending, description="The saga has not finished in time; poll status_url."),
            409: ResponseSpec(None, description="The email is taken.", media_type=PROBLEM),
            422: ResponseSpec(None, description="Invalid email, password or name.", media_type=PROBLEM),
            429: TOO_MANY,
        },
        **limited("register"),
    )
    async def register(data: JSONBody[RegisterUser]) -> Response[UserProfile | RegistrationPending]:
        """Run the registration saga and wait a bounded time for its outcome."""
        registration = await gateway.bus.run_saga(
            streams.AUTH_REGISTER, data, Registration, wait=settings.registration_wait, what="the registration"
        )
        return registration_response(registration)

    @get("/v1/auth/registrations/{registration_id:str}", summary="A registration saga's state")
    async def get_registration(registration_id: FromPath[str]) -> Registration:
        """pending, completed (with the user) or failed (with the reason)."""
        return await gateway.bus.request(
            streams.AUTH_GET_REGISTRATION, GetRegistration(registration_id=registration_id), Registration
        )

    @post(
        "/v1/auth/login",
        status_code=200,
        summary="Log in",
        responses={
            401: ResponseSpec(None, description="Unknown email or wrong password.", media_type=PROBLEM),
            429: ResponseSpec(
                None,
                description="Too many failed logins for this account or from this IP, or rate limited; "
                "Retry-After says when to try again. The same for unknown emails.",
                media_type=PROBLEM,
            ),
        },
        **limited("login"),
    )
    async def login(data: JSONBody[LoginBody], request: Request[Any, Any, Any]) -> TokenPair:
        """An access token (JWT) and a refresh token for a valid email and password."""
        user_agent, ip = client_of(request, settings)
        command = LogIn(email=data.email, password=data.password, user_agent=user_agent, ip=ip)
        # The lockout before the bus: a locked-out attempt costs auth nothing (no argon2 work).
        request_tokens = partial(gateway.bus.request, streams.AUTH_LOGIN, command, TokenPair)
        return await gateway.limits.login(data.email, ip, request_tokens)

    @post(
        "/v1/auth/refresh",
        status_code=200,
        summary="Exchange a refresh token for a new pair",
        responses={
            401: ResponseSpec(
                None,
                description="Unknown, expired or spent refresh token, or an ended session. A spent token "
                "presented again ends its session: every token issued from it stops working.",
                media_type=PROBLEM,
            ),
            429: TOO_MANY,
        },
        **limited("refresh"),
    )
    async def refresh(data: JSONBody[RefreshBody], request: Request[Any, Any, Any]) -> TokenPair:
        """A new access token and refresh token; the refresh token sent is spent."""
        user_agent, ip = client_of(request, settings)
        command = RefreshTokens(refresh_token=data.refresh_token, user_agent=user_agent, ip=ip)
        return await gateway.bus.request(streams.AUTH_REFRESH, command, TokenPair)

    @post("/v1/auth/logout", status_code=204, summary="Log out", responses={401: NO_SESSION}, **bearer)
    async def logout(request: Request[Any, Any, Any]) -> None:
        """End the session of the access token: it and the session's refresh token stop working."""
        claims = await gateway.claims(request)
        await gateway.bus.request(
            streams.AUTH_LOGOUT, LogOut(user_id=claims.user_id, session_id=claims.session_id), Done
        )

    @post(
        "/v1/auth/password",
        status_code=204,
        summary="Change my password",
        responses={
            401: NO_SESSION,
            403: ResponseSpec(None, description="The current password is wrong.", media_type=PROBLEM),
            422: ResponseSpec(None, description="The new password is too short or too long.", media_type=PROBLEM),
        },
        **bearer,
    )
    async def change_password(data: JSONBody[PasswordChangeBody], request: Request[Any, Any, Any]) -> None:
        """Set a new password, proving the current one; every other session of mine ends."""
        claims = await gateway.claims(request)
        command = ChangePassword(
            user_id=claims.user_id,
            session_id=claims.session_id,
            current_password=data.current_password,
            new_password=data.new_password,
        )
        await gateway.bus.request(streams.AUTH_CHANGE_PASSWORD, command, Done)

    @post(
        "/v1/auth/password-reset",
        status_code=202,
        summary="Ask for a password reset",
        responses={422: ResponseSpec(None, description="Not an email address.", media_type=PROBLEM), 429: TOO_MANY},
        **limited("password-reset"),
    )
    async def request_password_reset(data: JSONBody[RequestPasswordReset]) -> ResetRequested:
        """202 for any email: whether it has an account is not told.

        The answer does not wait for auth: it is sent once the request is on the bus, so
        neither its content nor its timing depends on the account existing. For an existing
        account auth then emits PasswordResetRequested with a one-time token for a mailer.
        """
        deadline = str(int((time.time() + PASSWORD_RESET_DEADLINE) * 1000))
        await gateway.bus.send(streams.AUTH_REQUEST_PASSWORD_RESET, data, headers={DEADLINE: deadline})
        return ResetRequested(message="If an account uses this email, a password reset link is on its way to it.")

    @post(
        "/v1/auth/password-reset/confirm",
        status_code=204,
        summary="Set a new password with a reset token",
        responses={
            400: ResponseSpec(None, description="The token is unknown, expired or already used.", media_type=PROBLEM),
            422: ResponseSpec(None, description="The new password is too short or too long.", media_type=PROBLEM),
            429: TOO_MANY,
        },
        **limited("password-reset-confirm"),
    )
    async def confirm_password_reset(data: JSONBody[ConfirmPasswordReset]) -> None:
        """Set the new password; the token is spent and every session of the account ends."""
        await gateway.bus.request(streams.AUTH_CONFIRM_PASSWORD_RESET, data, Done)

    @get("/v1/auth/sessions", summary="My sessions", responses={401: NO_SESSION}, **bearer)
    async def list_sessions(request: Request[Any, Any, Any]) -> SessionList:
        """My live sessions, most recently used first; ``current`` marks this token's."""
        claims = await gateway.claims(request)
        command = ListSessions(user_id=claims.user_id, session_id=claims.session_id)
        return await gateway.bus.request(streams.AUTH_LIST_SESSIONS, command, SessionList)

    @delete(
        "/v1/auth/sessions/{session_id:str}",
        status_code=204,
        summary="End one of my sessions",
        responses={
            401: NO_SESSION,
            404: ResponseSpec(None, description="No session of mine has this id.", media_type=PROBLEM),
        },
        **bearer,
    )
    async def revoke_session(session_id: FromPath[str], request: Request[Any, Any, Any]) -> None:
        """End a session: its tokens stop working. Ending the current one is a logout."""
        claims = await gateway.claims(request)
        command = RevokeSession(user_id=claims.user_id, session_id=session_id)
        await gateway.bus.request(streams.AUTH_REVOKE_SESSION, command, Done)

    @get("/.well-known/jwks.json", summary="Public signing keys", cache_control=None)
    async def jwks() -> Response[dict[str, Any]]:
        """The keys access tokens are signed with (RFC 7517)."""
        verifier = gateway.verifier
        if not verifier.jwks:
            await verifier.refresh()
        if not verifier.jwks:
            raise ReplyError("The signing keys are not available yet.", code=ErrorCode.UNAVAILABLE)
        return Response({"keys": verifier.jwks}, headers={"Cache-Control": "public, max-age=300"})

    return [
        register,
        get_registration,
        login,
        refresh,
        logout,
        change_password,
        request_password_reset,
        confirm_password_reset,
        list_sessions,
        revoke_session,
        jwks,
    ]
