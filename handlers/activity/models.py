"""The activity service's tables. Not contracts: rows are mapped to schemas at the edge."""

from datetime import UTC, datetime

from sqlalchemy import Index
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from db.outbox import InboxFields


def _now() -> datetime:
    return datetime.now(UTC)


class ActivityBase(SQLModel, registry=registry()):
    """Base of every activity table: the activity service's own metadata."""


class ActivityRow(ActivityBase, table=True):
    """One entry of a user's trail, recorded from one event."""

    __tablename__ = "activity"

    # A page is one range scan: a user's entries, newest first.
    __table_args__ = (Index("ix_activity_user_time", "user_id", "occurred_at", "event_id"),)

    event_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    occurred_at: datetime
    details: str = Field(default="{}", description="JSON: the fields of ActivityEntry that apply to this kind.")
    recorded_at: datetime = Field(default_factory=_now)


class Inbox(InboxFields, ActivityBase, table=True):
    """Events activity has recorded."""

    __tablename__ = "inbox"
