"""Commands: what a caller asks a service to do. One stream per command (schemas.streams)."""

from pydantic import Field

from schemas.base import Contract
from schemas.fields import DisplayName, Email, Identifier, OpaqueToken, Password, Printable


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


class GetUser(Contract):
    """Read one profile (``users.get``)."""

    user_id: Identifier


class Ping(Contract):
    """Ask a service to answer at once: a check of the whole bus path (``users.ping``)."""


class UpdateUser(Contract):
    """Change one's own profile (``users.update``); fields left out stay as they are."""

    user_id: Identifier
    display_name: DisplayName | None = None
