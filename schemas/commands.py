"""Commands: what a caller asks a service to do. One stream per command (schemas.streams).

``COMMANDS`` lists each command stream with its command and reply contracts;
docs/events.md and docs/asyncapi.json are generated from it (``uv run just contracts``).
"""

from typing import Final, NamedTuple

from pydantic import Field

from schemas import streams
from schemas.base import Contract
from schemas.fields import DisplayName, Email, Identifier, Password, Printable
from schemas.replies import ActivityPage, Jwks, Pong, Registration, TokenPair, UserProfile


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
    CommandRoute(streams.USERS_GET, GetUser, UserProfile),
    CommandRoute(streams.USERS_UPDATE, UpdateUser, UserProfile),
    CommandRoute(streams.USERS_PING, Ping, Pong),
    CommandRoute(streams.ACTIVITY_LIST, ListActivity, ActivityPage),
)
"""Every command stream (``<service>.<command>``, consumed by that service) and its contracts.

Every command may also be answered with a ``busway.Error`` reply (schemas.errors.ErrorReply).
"""
