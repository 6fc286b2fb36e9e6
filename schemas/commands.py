"""Commands: what a caller asks a service to do. One stream per command (schemas.streams).

``COMMANDS`` lists each command stream with its command and reply contracts;
docs/events.md and docs/asyncapi.json are generated from it (``uv run just contracts``).
"""

from typing import Final, NamedTuple

from pydantic import Field

from schemas import streams
from schemas.base import Contract
from schemas.fields import DisplayName, Email, Identifier, OpaqueToken, Password, Printable
from schemas.replies import (
    AccountDeletion,
    ActivityPage,
    Done,
    Jwks,
    Pong,
    Registration,
    SessionList,
    TokenPair,
    UserPage,
    UserProfile,
)


class RegisterUser(Contract):
    """Start the registration saga for a new account (``auth.register``)."""

    email: Email
    password: Password
    display_name: DisplayName


class GetRegistration(Contract):
    """Ask for the state of a registration saga (``auth.get_registration``)."""

    registration_id: Identifier


class LogIn(Contract):
    """Exchange an email and password for tokens (``auth.login``)."""

    email: Email
    password: str
    user_agent: Printable | None = None
    ip: str | None = Field(default=None, max_length=64)


class GetJwks(Contract):
    """Ask the auth service for its public signing keys (``auth.jwks``)."""


class RefreshTokens(Contract):
    """Exchange a refresh token for a new pair; the one given is spent (``auth.refresh``)."""

    refresh_token: OpaqueToken
    user_agent: Printable | None = None
    ip: str | None = Field(default=None, max_length=64)


class LogOut(Contract):
    """End the caller's session: its refresh token and access tokens stop working (``auth.logout``)."""

    user_id: Identifier
    session_id: Identifier


class ChangePassword(Contract):
    """Change a password, proving the current one; the user's other sessions end (``auth.change_password``)."""

    user_id: Identifier
    session_id: Identifier
    """The caller's session: the one that stays."""
    current_password: str = Field(min_length=1, max_length=256)
    new_password: Password


class RequestPasswordReset(Contract):
    """Send a one-time reset token to the account with this email, if there is one (``auth.request_password_reset``)."""

    email: Email


class ConfirmPasswordReset(Contract):
    """Set a new password with a reset token; every session ends (``auth.confirm_password_reset``)."""

    token: OpaqueToken
    new_password: Password


class ListSessions(Contract):
    """The user's live sessions (``auth.list_sessions``)."""

    user_id: Identifier
    session_id: Identifier | None = None
    """The caller's session, marked ``current`` in the answer."""


class RevokeSession(Contract):
    """End one of the user's own sessions (``auth.revoke_session``)."""

    user_id: Identifier
    session_id: Identifier


class DeleteAccount(Contract):
    """Delete the caller's account: profile, credentials, sessions, trail (``auth.delete_account``).

    Starts the deletion saga; its sessions end at once. The reply is the saga's state.
    """

    user_id: Identifier


class GetAccountDeletion(Contract):
    """Ask for the state of an account deletion saga (``auth.get_account_deletion``)."""

    deletion_id: Identifier


class GetUser(Contract):
    """Read one profile (``users.get``)."""

    user_id: Identifier


class Ping(Contract):
    """Ask a service to answer at once: a check of the whole bus path (``users.ping``)."""


class UpdateUser(Contract):
    """Change one's own profile (``users.update``); fields left out stay as they are."""

    user_id: Identifier
    display_name: DisplayName | None = None


class ListActivity(Contract):
    """One page of a user's activity trail, newest first (``activity.list``).

    ``cursor`` is the ``next_cursor`` of the previous page, as given: opaque to callers.
    """

    user_id: Identifier
    cursor: str | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=20, ge=1, le=100)


class ListUsers(Contract):
    """One page of every profile, oldest first (``users.list``); for administrators.

    ``cursor`` is the ``next_cursor`` of the previous page, as given: opaque to callers.
    """

    cursor: str | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=20, ge=1, le=100)


class CommandRoute(NamedTuple):
    """Where a command goes and what it answers: its stream, its contract, its reply's contract."""

    stream: str
    command: type[Contract]
    reply: type[Contract]


COMMANDS: Final[tuple[CommandRoute, ...]] = (
    CommandRoute(streams.AUTH_REGISTER, RegisterUser, Registration),
    CommandRoute(streams.AUTH_GET_REGISTRATION, GetRegistration, Registration),
    CommandRoute(streams.AUTH_LOGIN, LogIn, TokenPair),
    CommandRoute(streams.AUTH_JWKS, GetJwks, Jwks),
    CommandRoute(streams.AUTH_REFRESH, RefreshTokens, TokenPair),
    CommandRoute(streams.AUTH_LOGOUT, LogOut, Done),
    CommandRoute(streams.AUTH_CHANGE_PASSWORD, ChangePassword, Done),
    CommandRoute(streams.AUTH_REQUEST_PASSWORD_RESET, RequestPasswordReset, Done),
    CommandRoute(streams.AUTH_CONFIRM_PASSWORD_RESET, ConfirmPasswordReset, Done),
    CommandRoute(streams.AUTH_LIST_SESSIONS, ListSessions, SessionList),
    CommandRoute(streams.AUTH_REVOKE_SESSION, RevokeSession, Done),
    CommandRoute(streams.AUTH_DELETE_ACCOUNT, DeleteAccount, AccountDeletion),
    CommandRoute(streams.AUTH_GET_ACCOUNT_DELETION, GetAccountDeletion, AccountDeletion),
    CommandRoute(streams.USERS_GET, GetUser, UserProfile),
    CommandRoute(streams.USERS_UPDATE, UpdateUser, UserProfile),
    CommandRoute(streams.USERS_PING, Ping, Pong),
    CommandRoute(streams.ACTIVITY_LIST, ListActivity, ActivityPage),
    CommandRoute(streams.USERS_LIST, ListUsers, UserPage),
)
"""Every command stream (``<service>.<command>``, consumed by that service) and its contracts.

Every command may also be answered with a ``busway.Error`` reply (schemas.errors.ErrorReply).
"""
