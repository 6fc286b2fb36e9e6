"""The users service's tables. Not contracts: rows are mapped to schemas at the edge."""

from datetime import UTC, datetime

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from db.outbox import InboxFields, OutboxFields


def _now() -> datetime:
    return datetime.now(UTC)


class UsersBase(SQLModel, registry=registry()):
    """Base of every users table: the users service's own metadata."""


class Profile(UsersBase, table=True):
    """One user's profile."""

    __tablename__ = "profiles"

    id: str = Field(primary_key=True, max_length=64)
    email: str = Field(max_length=320, unique=True)
    display_name: str = Field(max_length=100)
    registration_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Outbox(OutboxFields, UsersBase, table=True):
    """users' outbox and event log."""

    __tablename__ = "outbox"


class Inbox(InboxFields, UsersBase, table=True):
    """Events users has handled."""

    __tablename__ = "inbox"
