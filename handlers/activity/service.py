"""The activity domain: a user's audit trail, built from auth's and users' events. No bus, no HTTP.

Each trail-worthy event becomes one row, written with the event's id in the inbox in one
transaction, so a redelivered (or replayed) event changes nothing twice. Pages run newest
first; the cursor names the last entry of the previous page (its time and event id), so
entries recorded meanwhile neither repeat nor shift a page.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, or_
from sqlmodel import col, select

from db.engine import SessionFactory
from db.inbox import first_time, forget_all
from handlers.activity.models import ActivityRow, Inbox
from schemas.commands import ListActivity
from schemas.errors import ErrorCode, ErrorDetail, ReplyError
from schemas.events import (
    AccountDeleted,
    Event,
    LoginFailed,
    PasswordChanged,
    ProfileDeleted,
    RegistrationCompleted,
    SessionRevoked,
    UserLoggedIn,
    UserUpdated,
)
from schemas.replies import ActivityEntry, ActivityKind, ActivityPage

TRAIL_EVENTS: tuple[type[Event], ...] = (
    RegistrationCompleted,
    UserLoggedIn,
    LoginFailed,
    PasswordChanged,
    UserUpdated,
    SessionRevoked,
)
"""The events that make a trail entry; the others are not the account owner's business."""


class InvalidCursor(ReplyError):
    """A cursor this service did not make (or made for another version of it)."""

    code = ErrorCode.INVALID_PAYLOAD

    def __init__(self) -> None:
        detail = ErrorDetail(loc=("cursor",), msg="Not a cursor from a previous page.", type="cursor_invalid")
        super().__init__("The cursor is not valid.", details=(detail,))


@dataclass(frozen=True)
class TrailEntry:
    """What one event adds to one user's trail."""

    user_id: str
    kind: ActivityKind
    details: dict[str, Any]


def entry_of(event: Event) -> TrailEntry | None:
    """The trail entry ``event`` makes, or None for an event that makes none."""
    details: dict[str, Any]
    match event:
        case RegistrationCompleted():
            user_id, kind, details = event.user_id, ActivityKind.ACCOUNT_CREATED, {}
        case UserLoggedIn():
            user_id, kind = event.user_id, ActivityKind.LOGIN
            details = {"session_id": event.session_id, "ip": event.ip, "user_agent": event.user_agent}
        case LoginFailed():
            user_id, kind = event.user_id, ActivityKind.LOGIN_FAILED
            details = {"reason": event.reason, "ip": event.ip, "user_agent": event.user_agent}
        case PasswordChanged():
            user_id, kind, details = event.user_id, ActivityKind.PASSWORD_CHANGED, {"via_reset": event.via_reset}
        case UserUpdated():
            # Which fields, not their values: a trail outlives the values it would copy.
            user_id, kind, details = event.user_id, ActivityKind.PROFILE_UPDATED, {"changed": sorted(event.changes)}
        case SessionRevoked():
            user_id, kind = event.user_id, ActivityKind.SESSION_REVOKED
            details = {"session_id": event.session_id, "reason": event.reason}
        case _:
            return None
    return TrailEntry(user_id, kind, details)


def encode_cursor(row: ActivityRow) -> str:
    """An opaque cursor after ``row``: base64url of its time and event id."""
    raw = json.dumps([row.occurred_at.astimezone(UTC).isoformat(), row.event_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The time and event id a cursor names; InvalidCursor if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id = json.loads(raw)
        occurred_at = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor from None
    if not isinstance(event_id, str) or not event_id or occurred_at.tzinfo is None:
        raise InvalidCursor
    return occurred_at.astimezone(UTC), event_id


def activity_of(row: ActivityRow) -> ActivityEntry:
    """The contract view of a trail row."""
    details = json.loads(row.details)
    return ActivityEntry(id=row.event_id, kind=ActivityKind(row.kind), occurred_at=row.occurred_at, **details)


class ActivityService:
    """Use cases of the activity service over its own database."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def record(self, event: Event, event_id: str, occurred_at: datetime) -> bool:
        """Add ``event`` to its user's trail, once however often delivered; whether it was added."""
        entry = entry_of(event)
        if entry is None:
            return False
        async with self._sessions() as session, session.begin():
            if not await first_time(session, Inbox, event_id):
                return False
            details = {key: value for key, value in entry.details.items() if value is not None}
            session.add(
                ActivityRow(
                    event_id=event_id,
                    user_id=entry.user_id,
                    kind=entry.kind.value,
                    occurred_at=occurred_at,
                    details=json.dumps(details),
                )
            )
        return True

    async def forget_user(self, event: AccountDeleted | ProfileDeleted, event_id: str) -> int:
        """Delete the account's whole trail, once per event; how many entries went.

        Called for the last event about the user on each stream (``AccountDeleted`` on
        events.auth, ``ProfileDeleted`` on events.users): whatever either stream still
        held about the user was recorded before, so nothing comes back afterwards.
        """
        async with self._sessions() as session, session.begin():
            if not await first_time(session, Inbox, event_id):
                return 0
            result = await session.exec(delete(ActivityRow).where(col(ActivityRow.user_id) == event.user_id))
        return int(result.rowcount)

    async def list(self, cmd: ListActivity) -> ActivityPage:
        """One page of ``cmd.user_id``'s trail, newest first."""
        query = select(ActivityRow).where(ActivityRow.user_id == cmd.user_id)
        if cmd.cursor is not None:
            at, event_id = decode_cursor(cmd.cursor)
            query = query.where(
                or_(
                    col(ActivityRow.occurred_at) < at,
                    and_(col(ActivityRow.occurred_at) == at, col(ActivityRow.event_id) < event_id),
                )
            )
        query = query.order_by(col(ActivityRow.occurred_at).desc(), col(ActivityRow.event_id).desc())
        async with self._sessions() as session:
            rows = (await session.exec(query.limit(cmd.limit + 1))).all()
        page, more = rows[: cmd.limit], len(rows) > cmd.limit
        return ActivityPage(
            items=tuple(activity_of(row) for row in page),
            next_cursor=encode_cursor(page[-1]) if more else None,
        )

    async def reset(self) -> tuple[int, int]:
        """Delete every trail entry and the inbox, to rebuild by replay; (entries, inbox rows) deleted."""
        async with self._sessions() as session, session.begin():
            entries = (await session.exec(delete(ActivityRow))).rowcount
            handled = await forget_all(session, Inbox)
        return int(entries), handled
