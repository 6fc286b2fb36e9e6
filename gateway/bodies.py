"""HTTP bodies the gateway speaks that are not bus contracts."""

from datetime import datetime

from pydantic import Field

from schemas.base import Contract
from schemas.fields import DisplayName, Email, OpaqueToken, Password
from schemas.replies import RegistrationState


class LoginBody(Contract):
    """POST /v1/auth/login."""

    email: Email
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(Contract):
    """POST /v1/auth/refresh."""

    refresh_token: OpaqueToken


class PasswordChangeBody(Contract):
    """POST /v1/auth/password."""

    current_password: str = Field(min_length=1, max_length=256)
    new_password: Password


class ResetRequested(Contract):
    """202 from password-reset: the same whether or not the email has an account."""

    message: str


class ProfilePatch(Contract):
    """PATCH /v1/users/me: the fields to change."""

    display_name: DisplayName | None = None


class RegistrationPending(Contract):
    """202 from register: the saga goes on; poll ``status_url``."""

    registration_id: str
    status: RegistrationState
    status_url: str


class PublicProfile(Contract):
    """What any signed-in user may see of another."""

    id: str
    display_name: str
    created_at: datetime


class AccountDeletionPending(Contract):
    """202 from DELETE /v1/users/me: the deletion saga goes on; poll ``status_url``."""

    deletion_id: str
    status: RegistrationState
    status_url: str
