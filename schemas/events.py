"""Domain events: what happened, past tense. One stream per producing service.

Every event type is listed in ``EVENT_TYPES`` with its schema version, and in
``EVENT_STREAMS`` with the stream its producer appends it to; a consumer looks the
``type`` header up there and skips the types it does not know. docs/events.md is
generated from these (``uv run just contracts``).
"""

from datetime import datetime
from enum import StrEnum
from typing import Final

from schemas.base import Contract
from schemas.errors import ErrorCode
from schemas.streams import EVENTS_AUTH, EVENTS_USERS


class Event(Contract):
    """Base of every event: the payload part; the envelope carries id, time and trace."""


class RegistrationStarted(Event):
    """auth accepted a registration and holds pending credentials for it."""

    registration_id: str
    user_id: str
    email: str
    display_name: str


class RegistrationCompleted(Event):
    """The saga finished: the profile exists and the credentials are active."""

    registration_id: str
    user_id: str


class RegistrationFailed(Event):
    """The saga was compensated: the pending credentials were deleted."""

    registration_id: str
    user_id: str
    reason: ErrorCode
    message: str


class UserLoggedIn(Event):
    """A login succeeded and a session began."""

    user_id: str
    session_id: str
    user_agent: str | None = None
    ip: str | None = None


class LoginFailed(Event):
    """A login for an existing account was refused (wrong password, or locked out)."""

    user_id: str
    reason: str
    user_agent: str | None = None
    ip: str | None = None


class PasswordChanged(Event):
    """A user's password was changed (by the user, or through a reset)."""

    user_id: str
    via_reset: bool = False


class SessionRevoked(Event):
    """A session ended before its time: logout, revocation, theft detection, password change."""

    user_id: str
    session_id: str
    reason: str


class RevocationReason(StrEnum):
    """The values auth puts in ``SessionRevoked.reason``; consumers should accept others too."""

    LOGOUT = "logout"
    """The session's user logged out."""
    REVOKED = "revoked"
    """Its user ended it from the session list (``DELETE /v1/auth/sessions/{id}``)."""
    REFRESH_REUSE = "refresh_reuse"
    """A spent refresh token of the session was presented again: presumed stolen."""
    PASSWORD_CHANGED = "password_changed"
    """Its user changed the password from another session."""
    PASSWORD_RESET = "password_reset"
    """The password was reset: every session ends."""
    ACCOUNT_DELETED = "account_deleted"
    """Its user asked for the account to be deleted: every session ends."""


class PasswordResetRequested(Event):
    """Someone asked to reset an existing account's password; a mailer sends ``token``.

    The token is single-use and expires at ``expires_at``. The event is only emitted for
    existing accounts; the HTTP answer is the same either way.
    """

    user_id: str
    email: str
    token: str
    expires_at: datetime


class UserCreated(Event):
    """users created the profile asked for by a registration."""

    registration_id: str
    user_id: str
    email: str
    display_name: str
    created_at: datetime


class UserCreationFailed(Event):
    """users refused the profile asked for by a registration."""

    registration_id: str
    user_id: str
    reason: ErrorCode
    message: str


class UserUpdated(Event):
    """A profile changed; ``changes`` names the fields and their new values."""

    user_id: str
    changes: dict[str, str]


class CredentialImported(Event):
    """auth took over a user of the legacy monolith: their old bcrypt hash, upgraded at the next login.

    Emitted by ``busway import-legacy``, never by a registration; ``user_id`` is derived
    from ``legacy_id``, so re-running the import emits nothing new.
    """

    user_id: str
    legacy_id: str
    email: str


class UserImported(Event):
    """users created the profile of a user of the legacy monolith (``busway import-legacy``).

    Not a ``UserCreated``: no registration saga ran, and subscribers that greet new users
    should not greet someone who has had an account for years.
    """

    user_id: str
    legacy_id: str
    email: str
    display_name: str
    created_at: datetime


class AccountDeletionStarted(Event):
    """auth began deleting an account: its credentials are held, its sessions have ended.

    users deletes the profile and answers ``ProfileDeleted`` (or ``ProfileDeletionFailed``).
    """

    deletion_id: str
    user_id: str


class AccountDeleted(Event):
    """The deletion saga finished: profile, credentials and sessions are gone.

    Consumers delete what they keep about ``user_id`` (activity deletes the trail). The
    email may be registered again, by anyone, as a new user with a new id.
    """

    deletion_id: str
    user_id: str


class AccountDeletionFailed(Event):
    """The deletion saga was compensated: the account is active again (its sessions stay ended)."""

    deletion_id: str
    user_id: str
    reason: ErrorCode
    message: str


class ProfileDeleted(Event):
    """users deleted the profile asked for by an account deletion (or found none to delete)."""

    deletion_id: str
    user_id: str


class ProfileDeletionFailed(Event):
    """users refused to delete the profile asked for by an account deletion; nothing was deleted."""

    deletion_id: str
    user_id: str
    reason: ErrorCode
    message: str


EVENT_TYPES: Final[dict[str, tuple[type[Event], int]]] = {
    cls.__name__: (cls, 1)
    for cls in (
        RegistrationStarted,
        RegistrationCompleted,
        RegistrationFailed,
        UserLoggedIn,
        LoginFailed,
        PasswordChanged,
        SessionRevoked,
        PasswordResetRequested,
        UserCreated,
        UserCreationFailed,
        UserUpdated,
        CredentialImported,
        UserImported,
        AccountDeletionStarted,
        AccountDeleted,
        AccountDeletionFailed,
        ProfileDeleted,
        ProfileDeletionFailed,
    )
}
"""Every event type: name -> (payload model, schema version)."""

EVENT_STREAMS: Final[dict[str, str]] = {
    "RegistrationStarted": EVENTS_AUTH,
    "RegistrationCompleted": EVENTS_AUTH,
    "RegistrationFailed": EVENTS_AUTH,
    "UserLoggedIn": EVENTS_AUTH,
    "LoginFailed": EVENTS_AUTH,
    "PasswordChanged": EVENTS_AUTH,
    "SessionRevoked": EVENTS_AUTH,
    "PasswordResetRequested": EVENTS_AUTH,
    "UserCreated": EVENTS_USERS,
    "UserCreationFailed": EVENTS_USERS,
    "UserUpdated": EVENTS_USERS,
    "CredentialImported": EVENTS_AUTH,
    "UserImported": EVENTS_USERS,
    "AccountDeletionStarted": EVENTS_AUTH,
    "AccountDeleted": EVENTS_AUTH,
    "AccountDeletionFailed": EVENTS_AUTH,
    "ProfileDeleted": EVENTS_USERS,
    "ProfileDeletionFailed": EVENTS_USERS,
}
"""Every event type: name -> the stream its producer appends it to (``events.<producer>``)."""
