"""The auth service's tables. Not contracts: rows are mapped to schemas at the edge."""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from db.outbox import InboxFields, OutboxFields


def _now() -> datetime:
    return datetime.now(UTC)


class AuthBase(SQLModel, registry=registry()):
    """Base of every auth table: the auth service's own metadata."""


class CredentialStatus(StrEnum):
    """A credential is pending until the registration saga completes, deleting while its deletion runs."""

    PENDING = "pending"
    ACTIVE = "active"
    DELETING = "deleting"


class Credential(AuthBase, table=True):
    """How one user proves who they are."""

    __tablename__ = "credentials"

    user_id: str = Field(primary_key=True, max_length=64)
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=512)
    status: str = Field(default=CredentialStatus.PENDING, max_length=16)
    roles: str = Field(default="", max_length=200)
    """Space-separated roles (``admin``), copied into the access token's ``roles`` claim."""
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


ADMIN = "admin"
"""The role that may list every user (GET /v1/users)."""


def roles_of(credential: Credential) -> list[str]:
    """The credential's roles, sorted."""
    return sorted(set(credential.roles.split()))


class RegistrationRow(AuthBase, table=True):
    """One registration saga and where it stands."""

    __tablename__ = "registrations"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    email: str = Field(max_length=320)
    display_name: str = Field(max_length=100)
    state: str = Field(default="pending", max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    reason_message: str | None = Field(default=None, max_length=500)
    user_created_at: datetime | None = None
    notify_to: str | None = Field(default=None, max_length=300)
    notify_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class AccountDeletionRow(AuthBase, table=True):
    """One account deletion saga and where it stands; kept (no email, no name) for its status URL."""

    __tablename__ = "account_deletions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    state: str = Field(default="pending", max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    reason_message: str | None = Field(default=None, max_length=500)
    notify_to: str | None = Field(default=None, max_length=300)
    notify_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class SessionRow(AuthBase, table=True):
    """A login: its refresh token (hashed) and where it came from."""

    __tablename__ = "sessions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    refresh_token_hash: str = Field(max_length=128, unique=True)
    user_agent: str | None = Field(default=None, max_length=500)
    ip: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=_now)
    last_used_at: datetime = Field(default_factory=_now)
    revoked_at: datetime | None = None
    revoked_reason: str | None = Field(default=None, max_length=32)


class SpentRefreshToken(AuthBase, table=True):
    """A refresh token already exchanged: presenting it again means it was stolen."""

    __tablename__ = "spent_refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    session_id: str = Field(max_length=64, index=True)
    spent_at: datetime = Field(default_factory=_now)
    spent_by: str | None = Field(default=None, max_length=64)
    """The refresh command that spent it: a redelivery of that command is not a theft."""


class PasswordReset(AuthBase, table=True):
    """A one-time password reset token (its SHA-256 only), until used, replaced or expired."""

    __tablename__ = "password_resets"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    created_at: datetime = Field(default_factory=_now)
    expires_at: datetime
    used_at: datetime | None = None


class HandledCommand(AuthBase, table=True):
    """A command whose effect must not happen twice, and the reply it got the first time."""

    __tablename__ = "handled_commands"

    command_id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=100)
    reply: str
    handled_at: datetime = Field(default_factory=_now)


class Outbox(OutboxFields, AuthBase, table=True):
    """auth's outbox and event log."""

    __tablename__ = "outbox"


class Inbox(InboxFields, AuthBase, table=True):
    """Events auth has handled."""

    __tablename__ = "inbox"
