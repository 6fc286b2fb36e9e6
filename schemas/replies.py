"""Replies: the typed result of a command, sent to the requester's inbox."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from schemas.base import Contract
from schemas.errors import ErrorCode


class RegistrationState(StrEnum):
    """Where a registration saga stands."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class UserProfile(Contract):
    """A user's profile as the users service keeps it."""

    id: str
    email: str
    display_name: str
    created_at: datetime
    updated_at: datetime


class Registration(Contract):
    """The state of one registration saga; ``user`` once completed, ``reason`` once failed."""

    registration_id: str
    user_id: str
    state: RegistrationState
    user: UserProfile | None = None
    reason: ErrorCode | None = None
    reason_message: str | None = None


class AccountDeletion(Contract):
    """The state of one account deletion saga; ``reason`` once failed (the account was restored)."""

    deletion_id: str
    user_id: str
    state: RegistrationState
    reason: ErrorCode | None = None
    reason_message: str | None = None


class TokenPair(Contract):
    """What a successful login returns."""

    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class Jwks(Contract):
    """A JSON Web Key Set (RFC 7517) of the auth service's public keys."""

    keys: tuple[dict[str, Any], ...]


class Done(Contract):
    """The command took effect; there is nothing to return."""


class SessionInfo(Contract):
    """One live session: a login and the refreshes that continued it."""

    id: str
    created_at: datetime
    last_used_at: datetime
    """The login, or the latest refresh."""
    user_agent: str | None = None
    ip: str | None = None
    current: bool = False
    """Whether this is the session of the caller's access token."""


class SessionList(Contract):
    """A user's live sessions, most recently used first."""

    sessions: tuple[SessionInfo, ...]


class Pong(Contract):
    """The answer to a Ping: which service answered."""

    service: str


class ActivityKind(StrEnum):
    """What an entry of a user's activity trail records."""

    ACCOUNT_CREATED = "account_created"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    PASSWORD_CHANGED = "password_changed"
    PROFILE_UPDATED = "profile_updated"
    SESSION_REVOKED = "session_revoked"


class ActivityEntry(Contract):
    """One thing that happened to a user's account; fields that do not apply are null.

    ``id`` is the id of the event it was recorded from.
    """

    id: str
    kind: ActivityKind
    occurred_at: datetime
    session_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None
    via_reset: bool | None = None
    changed: tuple[str, ...] | None = None


class ActivityPage(Contract):
    """A page of a user's activity trail, newest first; ``next_cursor`` is null on the last page."""

    items: tuple[ActivityEntry, ...]
    next_cursor: str | None = None


class UserPage(Contract):
    """One page of profiles, oldest first; ``next_cursor`` is None on the last page."""

    items: tuple[UserProfile, ...]
    next_cursor: str | None = None
