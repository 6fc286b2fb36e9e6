"""The users domain: profiles. No bus, no HTTP here."""

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from db.engine import SessionFactory
from db.outbox import add_event
from handlers.users import SERVICE
from handlers.users.models import Inbox, Outbox, Profile
from schemas.commands import ListUsers, UpdateUser
from schemas.envelope import Trace
from schemas.errors import ErrorCode, ErrorDetail, ReplyError
from schemas.events import (
    AccountDeletionStarted,
    Event,
    ProfileDeleted,
    ProfileDeletionFailed,
    RegistrationStarted,
    UserCreated,
    UserCreationFailed,
    UserUpdated,
)
from schemas.replies import UserPage, UserProfile
from schemas.streams import EVENTS_USERS


class NotFound(ReplyError):
    """No such profile."""

    code = ErrorCode.NOT_FOUND


class InvalidCursor(ReplyError):
    """A cursor this service did not make."""

    code = ErrorCode.INVALID_PAYLOAD

    def __init__(self) -> None:
        detail = ErrorDetail(loc=("cursor",), msg="Not a cursor from a previous page.", type="cursor_invalid")
        super().__init__("The cursor is not valid.", details=(detail,))


def encode_cursor(row: Profile) -> str:
    """An opaque cursor after ``row``: base64url of its creation time and id."""
    created_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), row.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The creation time and id a cursor names; InvalidCursor if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, user_id = json.loads(raw)
        created_at = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor from None
    if not isinstance(user_id, str) or not user_id or created_at.tzinfo is None:
        raise InvalidCursor
    return created_at.astimezone(UTC), user_id


def profile_of(row: Profile) -> UserProfile:
    """The contract view of a profile row."""
    return UserProfile(
        id=row.id, email=row.email, display_name=row.display_name, created_at=row.created_at, updated_at=row.updated_at
    )


class UsersService:
    """Use cases of the users service: writes to the write engine, queries to the read engine."""

    def __init__(
        self,
        sessions: SessionFactory,
        read_sessions: SessionFactory | None = None,
        *,
        events_committed: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._read_sessions = read_sessions or sessions
        self._events_committed = events_committed

    def _emit(self, session: AsyncSession, event: Event, trace: Trace, subject: str) -> None:
        add_event(session, Outbox, EVENTS_USERS, event, trace=trace, producer=SERVICE, subject=subject)

    async def on_registration_started(self, event: RegistrationStarted, event_id: str, trace: Trace) -> None:
        """Saga step: create the profile, or say why not. Once per event, however often delivered.

        A concurrent duplicate delivery fails on the inbox key and stays pending (not
        acked); when it is delivered again it finds the event handled.
        """
        async with self._sessions() as session, session.begin():
            if await session.get(Inbox, event_id) is not None:
                return
            session.add(Inbox(event_id=event_id))
            taken = (await session.exec(select(Profile.id).where(Profile.email == event.email))).first()
            if taken is not None:
                failed = UserCreationFailed(
                    registration_id=event.registration_id,
                    user_id=event.user_id,
                    reason=ErrorCode.EMAIL_TAKEN,
                    message="A profile with this email already exists.",
                )
                self._emit(session, failed, trace, event.user_id)
            else:
                now = datetime.now(UTC)
                row = Profile(
                    id=event.user_id,
                    email=event.email,
                    display_name=event.display_name,
                    registration_id=event.registration_id,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                created = UserCreated(
                    registration_id=event.registration_id,
                    user_id=row.id,
                    email=row.email,
                    display_name=row.display_name,
                    created_at=row.created_at,
                )
                self._emit(session, created, trace, row.id)
        self._events_committed()

    def deletion_refused(self, profile: Profile) -> str | None:
        """Why ``profile`` may not be deleted now, or None. Nothing holds a profile back yet.

        The place for a legal hold or an open dispute: a reason here makes users answer
        ProfileDeletionFailed, and auth restores the account (the saga's compensation).
        """
        del profile
        return None

    async def on_account_deletion_started(self, event: AccountDeletionStarted, event_id: str, trace: Trace) -> None:
        """Saga step: delete the profile (none left is fine) and say so; or refuse. Once per event."""
        async with self._sessions() as session, session.begin():
            if await session.get(Inbox, event_id) is not None:
                return
            session.add(Inbox(event_id=event_id))
            row = await session.get(Profile, event.user_id)
            refused = self.deletion_refused(row) if row is not None else None
            outcome: Event
            if refused is not None:
                outcome = ProfileDeletionFailed(
                    deletion_id=event.deletion_id, user_id=event.user_id, reason=ErrorCode.FORBIDDEN, message=refused
                )
            else:
                if row is not None:
                    await session.delete(row)
                outcome = ProfileDeleted(deletion_id=event.deletion_id, user_id=event.user_id)
            self._emit(session, outcome, trace, event.user_id)
        self._events_committed()

    async def get(self, user_id: str) -> UserProfile:
        """One profile, from the read engine."""
        async with self._read_sessions() as session:
            row = await session.get(Profile, user_id)
        if row is None:
            raise NotFound("No such user.")
        return profile_of(row)

    async def list(self, cmd: ListUsers) -> UserPage:
        """One page of every profile, oldest first (keyset paging: stable while users register)."""
        query = select(Profile)
        if cmd.cursor is not None:
            at, user_id = decode_cursor(cmd.cursor)
            query = query.where(
                or_(col(Profile.created_at) > at, and_(col(Profile.created_at) == at, col(Profile.id) > user_id))
            )
        query = query.order_by(col(Profile.created_at), col(Profile.id)).limit(cmd.limit + 1)
        async with self._read_sessions() as session:
            rows = (await session.exec(query)).all()
        page, more = rows[: cmd.limit], len(rows) > cmd.limit
        return UserPage(
            items=tuple(profile_of(row) for row in page), next_cursor=encode_cursor(page[-1]) if more else None
        )

    async def update(self, cmd: UpdateUser, trace: Trace) -> UserProfile:
        """Change a profile; emits UserUpdated when something changed."""
        async with self._sessions() as session, session.begin():
            row = await session.get(Profile, cmd.user_id)
            if row is None:
                raise NotFound("No such user.")
            changes: dict[str, str] = {}
            if cmd.display_name is not None and cmd.display_name != row.display_name:
                row.display_name = changes["display_name"] = cmd.display_name
            if changes:
                row.updated_at = datetime.now(UTC)
                session.add(row)
                self._emit(session, UserUpdated(user_id=row.id, changes=changes), trace, row.id)
        if changes:
            self._events_committed()
        return profile_of(row)
