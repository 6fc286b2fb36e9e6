"""The auth domain: registrations, credentials, logins, tokens. No bus, no HTTP here."""

import hashlib
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from db.engine import SessionFactory
from db.outbox import add_event
from handlers.auth import SERVICE
from handlers.auth.keys import KeyRing
from handlers.auth.models import (
    ADMIN,
    AccountDeletionRow,
    Credential,
    CredentialStatus,
    HandledCommand,
    Inbox,
    Outbox,
    PasswordReset,
    RegistrationRow,
    SessionRow,
    SpentRefreshToken,
    roles_of,
)
from handlers.auth.passwords import PasswordHasher
from schemas.commands import (
    ChangePassword,
    ConfirmPasswordReset,
    DeleteAccount,
    ListSessions,
    LogIn,
    LogOut,
    RefreshTokens,
    RegisterUser,
    RequestPasswordReset,
    RevokeSession,
)
from schemas.envelope import Trace
from schemas.errors import ErrorCode, ReplyError
from schemas.events import (
    AccountDeleted,
    AccountDeletionFailed,
    AccountDeletionStarted,
    Event,
    LoginFailed,
    PasswordChanged,
    PasswordResetRequested,
    ProfileDeleted,
    ProfileDeletionFailed,
    RegistrationCompleted,
    RegistrationFailed,
    RegistrationStarted,
    RevocationReason,
    SessionRevoked,
    UserCreated,
    UserCreationFailed,
    UserLoggedIn,
)
from schemas.replies import (
    AccountDeletion,
    Done,
    Jwks,
    Registration,
    RegistrationState,
    SessionInfo,
    SessionList,
    TokenPair,
    UserProfile,
)
from schemas.streams import EVENTS_AUTH

ReplyT = TypeVar("ReplyT", bound=BaseModel)
SagaRowT = TypeVar("SagaRowT", RegistrationRow, AccountDeletionRow)

REVOCATION_MARGIN = 300
"""Seconds a revoked session stays refused past its last access token's expiry.

The gateway accepts a token up to ``GATEWAY_JWT_LEEWAY`` seconds after ``exp``; 300 is the
largest leeway it can be configured with.
"""


class EmailTaken(ReplyError):
    """An account with this email exists or is being registered."""

    code = ErrorCode.EMAIL_TAKEN


def _registration_id_of(command_id: str) -> str:
    """A registration id derived from the command that began it (any id format in, hex out)."""
    return hashlib.sha256(f"registration:{command_id}".encode()).hexdigest()[:32]


def _deletion_id_of(command_id: str) -> str:
    """A deletion id derived from the command that began it, as for registrations."""
    return hashlib.sha256(f"deletion:{command_id}".encode()).hexdigest()[:32]


class InvalidCredentials(ReplyError):
    """Unknown email or wrong password: deliberately one message for both."""

    code = ErrorCode.INVALID_CREDENTIALS


class NotFound(ReplyError):
    """No such thing."""

    code = ErrorCode.NOT_FOUND


class WrongPassword(ReplyError):
    """A password change whose current password is wrong."""

    code = ErrorCode.WRONG_PASSWORD


class InvalidResetToken(ReplyError):
    """A password reset token that is unknown, expired, replaced or used."""

    code = ErrorCode.INVALID_RESET_TOKEN


REFRESH_REFUSED = "The refresh token is not valid; log in again."
RESET_REFUSED = "The reset token is not valid: unknown, expired or already used."


@dataclass(frozen=True)
class Notify:
    """Where to report a saga's outcome: the requester's inbox and the key it waits on."""

    channel: str
    key: str


@dataclass(frozen=True)
class TokenSettings:
    """What goes into the tokens auth issues, and how long each lives (seconds)."""

    issuer: str
    audience: str
    ttl: int
    refresh_ttl: int = 30 * 86_400
    """A session ends this long after its login or its latest refresh."""
    reset_ttl: int = 3_600


@dataclass(frozen=True)
class Revocation:
    """A revoked session, and how many more seconds its access tokens must be refused."""

    session_id: str
    seconds: int
    reason: str


async def _announce_nothing(_: Sequence[Revocation]) -> None:
    return None


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def deletion_of(row: AccountDeletionRow) -> AccountDeletion:
    """The contract view of an account deletion row."""
    return AccountDeletion(
        deletion_id=row.id,
        user_id=row.user_id,
        state=RegistrationState(row.state),
        reason=ErrorCode(row.reason) if row.reason else None,
        reason_message=row.reason_message,
    )


def registration_of(row: RegistrationRow) -> Registration:
    """The contract view of a registration row."""
    user = None
    if row.state == RegistrationState.COMPLETED and row.user_created_at is not None:
        user = UserProfile(
            id=row.user_id,
            email=row.email,
            display_name=row.display_name,
            created_at=row.user_created_at,
            updated_at=row.user_created_at,
        )
    return Registration(
        registration_id=row.id,
        user_id=row.user_id,
        state=RegistrationState(row.state),
        user=user,
        reason=ErrorCode(row.reason) if row.reason else None,
        reason_message=row.reason_message,
    )


class AuthService:
    """Use cases of the auth service over its own database."""

    def __init__(
        self,
        sessions: SessionFactory,
        hasher: PasswordHasher,
        keys: KeyRing,
        tokens: TokenSettings,
        *,
        events_committed: Callable[[], None] = lambda: None,
        sessions_revoked: Callable[[Sequence[Revocation]], Awaitable[None]] = _announce_nothing,
    ) -> None:
        """``sessions_revoked`` tells the gateway (through Redis) to refuse revoked sessions' tokens.

        It is awaited after the revocation commits and before the command is answered, so
        a client told "logged out" never finds the old access token still working.
        """
        self._sessions = sessions
        self._hasher = hasher
        self._keys = keys
        self._tokens = tokens
        self._events_committed = events_committed
        self._sessions_revoked = sessions_revoked

    def _emit(self, session: AsyncSession, event: Event, trace: Trace, subject: str) -> None:
        add_event(session, Outbox, EVENTS_AUTH, event, trace=trace, producer=SERVICE, subject=subject)

    async def register(
        self, cmd: RegisterUser, trace: Trace, notify: Notify | None = None, *, command_id: str | None = None
    ) -> Registration:
        """Hold pending credentials and start the saga; EmailTaken if the email is in use.

        ``command_id`` (the command's message id) makes a redelivered command return the
        first outcome instead of a conflict with itself: the registration id is derived
        from it, so the second delivery finds the registration the first one began.
        """
        registration_id = _registration_id_of(command_id) if command_id else uuid.uuid4().hex
        async with self._sessions() as session:
            if (await session.exec(select(Credential.user_id).where(Credential.email == cmd.email))).first():
                return await self._own_registration(session, registration_id, cmd.email)
        password_hash = await self._hasher.hash(cmd.password)
        row = RegistrationRow(
            id=registration_id,
            user_id=uuid.uuid4().hex,
            email=cmd.email,
            display_name=cmd.display_name,
            notify_to=notify.channel if notify else None,
            notify_key=notify.key if notify else None,
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(Credential(user_id=row.user_id, email=cmd.email, password_hash=password_hash))
                session.add(row)
                started = RegistrationStarted(
                    registration_id=row.id, user_id=row.user_id, email=cmd.email, display_name=cmd.display_name
                )
                self._emit(session, started, trace, row.user_id)
        except IntegrityError:
            async with self._sessions() as session:
                return await self._own_registration(session, registration_id, cmd.email)
        self._events_committed()
        return registration_of(row)

    async def _own_registration(self, session: AsyncSession, registration_id: str, email: str) -> Registration:
        """``email`` is taken: by this very command's registration (its first outcome), or EmailTaken."""
        row = await session.get(RegistrationRow, registration_id)
        if row is None or row.email != email:
            raise EmailTaken("An account with this email already exists.")
        return registration_of(row)

    async def registration(self, registration_id: str) -> Registration:
        """The state of one registration saga."""
        async with self._sessions() as session:
            row = await session.get(RegistrationRow, registration_id)
        if row is None:
            raise NotFound("No such registration.")
        return registration_of(row)

    async def _first_time(self, session: AsyncSession, event_id: str) -> bool:
        if await session.get(Inbox, event_id) is not None:
            return False
        session.add(Inbox(event_id=event_id))
        return True

    async def _pending_saga(
        self, session: AsyncSession, event_id: str, model: type[SagaRowT], saga_id: str
    ) -> SagaRowT | None:
        """The saga row an event moves on, or None: the event came before, or the saga ended."""
        if not await self._first_time(session, event_id):
            return None
        row = await session.get(model, saga_id)
        return row if row is not None and row.state == RegistrationState.PENDING else None

    async def on_user_created(
        self, event: UserCreated, event_id: str, trace: Trace
    ) -> tuple[Registration, Notify | None] | None:
        """Saga step: the profile exists, so activate the credentials."""
        async with self._sessions() as session, session.begin():
            row = await self._pending_saga(session, event_id, RegistrationRow, event.registration_id)
            credential = await session.get(Credential, event.user_id) if row is not None else None
            if row is None or credential is None:
                return None
            credential.status = CredentialStatus.ACTIVE
            credential.updated_at = row.updated_at = _now()
            row.state = RegistrationState.COMPLETED
            row.user_created_at = event.created_at
            row.display_name = event.display_name
            session.add_all([credential, row])
            self._emit(session, RegistrationCompleted(registration_id=row.id, user_id=row.user_id), trace, row.user_id)
        self._events_committed()
        return registration_of(row), _notify_of(row)

    async def on_user_creation_failed(
        self, event: UserCreationFailed, event_id: str, trace: Trace
    ) -> tuple[Registration, Notify | None] | None:
        """Saga compensation: no profile, so delete the pending credentials."""
        async with self._sessions() as session, session.begin():
            row = await self._pending_saga(session, event_id, RegistrationRow, event.registration_id)
            if row is None:
                return None
            credential = await session.get(Credential, event.user_id)
            if credential is not None and credential.status == CredentialStatus.PENDING:
                await session.delete(credential)
            _mark_failed(row, event.reason.value, event.message)
            session.add(row)
            failed = RegistrationFailed(
                registration_id=row.id, user_id=row.user_id, reason=event.reason, message=event.message
            )
            self._emit(session, failed, trace, row.user_id)
        self._events_committed()
        return registration_of(row), _notify_of(row)

    async def login(self, cmd: LogIn, trace: Trace) -> TokenPair:
        """Tokens for a valid email and password; one generic error otherwise."""
        async with self._sessions() as session:
            credential = (await session.exec(select(Credential).where(Credential.email == cmd.email))).first()
        active = credential is not None and credential.status == CredentialStatus.ACTIVE
        valid, new_hash = await self._hasher.verify(
            cmd.password, credential.password_hash if active and credential else None
        )
        if not valid or credential is None:
            if active and credential is not None:
                await self._login_failed(credential.user_id, cmd, trace)
            raise InvalidCredentials("Invalid email or password.")
        session_id = uuid.uuid4().hex
        refresh_token = secrets.token_urlsafe(32)
        async with self._sessions() as session, session.begin():
            if new_hash:
                credential.password_hash = new_hash
                credential.updated_at = _now()
                session.add(credential)
            session.add(
                SessionRow(
                    id=session_id,
                    user_id=credential.user_id,
                    refresh_token_hash=_hash_token(refresh_token),
                    user_agent=cmd.user_agent,
                    ip=cmd.ip,
                )
            )
            logged_in = UserLoggedIn(
                user_id=credential.user_id, session_id=session_id, user_agent=cmd.user_agent, ip=cmd.ip
            )
            self._emit(session, logged_in, trace, credential.user_id)
        self._events_committed()
        return self._token_pair(credential.user_id, session_id, refresh_token, roles_of(credential))

    def _token_pair(self, user_id: str, session_id: str, refresh_token: str, roles: list[str]) -> TokenPair:
        claims = {
            "iss": self._tokens.issuer,
            "aud": self._tokens.audience,
            "sub": user_id,
            "sid": session_id,
            "roles": roles,
        }
        access_token, ttl = self._keys.sign(claims, self._tokens.ttl)
        return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=ttl)

    async def _login_failed(self, user_id: str, cmd: LogIn, trace: Trace) -> None:
        """Record a wrong password for an existing account: LoginFailed, for the owner's trail."""
        async with self._sessions() as session, session.begin():
            failed = LoginFailed(user_id=user_id, reason="invalid_password", user_agent=cmd.user_agent, ip=cmd.ip)
            self._emit(session, failed, trace, user_id)
        self._events_committed()

    def _live(self, row: SessionRow, now: datetime) -> bool:
        return row.revoked_at is None and row.last_used_at > now - timedelta(seconds=self._tokens.refresh_ttl)

    async def refresh(self, cmd: RefreshTokens, trace: Trace, command_id: str) -> TokenPair:
        """A new pair for a live session's current refresh token, which is spent by it.

        A spent token presented again revokes its session: either the client or a thief
        holds a copy, and the server cannot tell which one is the user, so neither keeps it.
        """
        presented = _hash_token(cmd.refresh_token)
        refresh_token = secrets.token_urlsafe(32)
        now = _now()
        rotated: SessionRow | None = None
        roles: list[str] = []
        stolen_from: str | None = None
        robbed: str | None = None
        async with self._sessions() as session, session.begin():
            row = (await session.exec(select(SessionRow).where(SessionRow.refresh_token_hash == presented))).first()
            if row is not None and self._live(row, now):
                # Conditional, so that of two refreshes racing with one token exactly one wins.
                result: CursorResult[Any] = await session.exec(
                    update(SessionRow)
                    .where(
                        col(SessionRow.id) == row.id,
                        col(SessionRow.refresh_token_hash) == presented,
                        col(SessionRow.revoked_at).is_(None),
                    )
                    .values(
                        refresh_token_hash=_hash_token(refresh_token),
                        last_used_at=now,
                        user_agent=cmd.user_agent or row.user_agent,
                        ip=cmd.ip or row.ip,
                    )
                )
                if result.rowcount == 1:
                    session.add(
                        SpentRefreshToken(token_hash=presented, session_id=row.id, spent_at=now, spent_by=command_id)
                    )
                    rotated = row
                    # Read at every refresh: a role granted or revoked shows in the next token.
                    credential = await session.get(Credential, row.user_id)
                    roles = roles_of(credential) if credential is not None else []
                else:
                    stolen_from = row.id  # the other refresh won: this copy of the token is spent
            elif row is None:
                spent = await session.get(SpentRefreshToken, presented)
                if spent is not None and spent.spent_by != command_id:
                    stolen_from = spent.session_id
                # spent_by == command_id: this very command, delivered again after it rotated
                # the token. Not a theft; its first reply has gone, and holds a token only
                # its hash was kept of, so it cannot be sent again: refused, nothing revoked.
            if stolen_from is not None:
                victim = (
                    await session.exec(
                        select(SessionRow).where(SessionRow.id == stolen_from).execution_options(populate_existing=True)
                    )
                ).first()
                if victim is not None:
                    robbed = victim.user_id
                    if victim.revoked_at is None:
                        self._revoke(session, victim, RevocationReason.REFRESH_REUSE, trace, now)
        if robbed is not None:
            self._events_committed()
            await self._announce_revocations(robbed)
        if rotated is None:
            raise InvalidCredentials(REFRESH_REFUSED)
        return self._token_pair(rotated.user_id, rotated.id, refresh_token, roles)

    def _revoke(
        self, session: AsyncSession, row: SessionRow, reason: RevocationReason, trace: Trace, now: datetime
    ) -> None:
        row.revoked_at = now
        row.revoked_reason = reason.value
        session.add(row)
        revoked = SessionRevoked(user_id=row.user_id, session_id=row.id, reason=reason.value)
        self._emit(session, revoked, trace, row.user_id)

    async def _revoke_all(
        self,
        session: AsyncSession,
        user_id: str,
        reason: RevocationReason,
        trace: Trace,
        now: datetime,
        *,
        keep: str | None = None,
    ) -> None:
        """Revoke the user's live sessions, but ``keep``."""
        rows = await session.exec(
            select(SessionRow).where(
                SessionRow.user_id == user_id,
                col(SessionRow.revoked_at).is_(None),
                SessionRow.last_used_at > now - timedelta(seconds=self._tokens.refresh_ttl),
            )
        )
        for row in rows.all():
            if row.id != keep:
                self._revoke(session, row, reason, trace, now)

    async def _announce_revocations(self, user_id: str) -> None:
        """Tell the gateway every revoked session of the user whose access tokens may still be valid.

        All of them, not only those just revoked: a command delivered again after a
        failure here repairs what the first delivery could not write.
        """
        now = _now()
        keep_for = timedelta(seconds=self._tokens.ttl + REVOCATION_MARGIN)
        async with self._sessions() as session:
            rows = await session.exec(
                select(SessionRow).where(
                    SessionRow.user_id == user_id,
                    col(SessionRow.revoked_at).is_not(None),
                    SessionRow.last_used_at > now - keep_for,
                )
            )
            # The session's newest access token was signed when it was last used.
            revocations = [
                Revocation(
                    row.id, math.ceil((row.last_used_at + keep_for - now).total_seconds()), row.revoked_reason or ""
                )
                for row in rows.all()
            ]
        if revocations:
            await self._sessions_revoked(revocations)

    async def logout(self, cmd: LogOut, trace: Trace) -> Done:
        """End the caller's session; ending an ended session changes nothing."""
        await self._end_session(cmd.user_id, cmd.session_id, RevocationReason.LOGOUT, trace)
        return Done()

    async def revoke_session(self, cmd: RevokeSession, trace: Trace) -> Done:
        """End one of the user's own sessions; NotFound for another user's or an unknown one."""
        await self._end_session(cmd.user_id, cmd.session_id, RevocationReason.REVOKED, trace)
        return Done()

    async def _end_session(self, user_id: str, session_id: str, reason: RevocationReason, trace: Trace) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(SessionRow, session_id)
            # Another user's session is reported exactly like one that does not exist.
            if row is None or row.user_id != user_id:
                raise NotFound("No such session.")
            revoked = row.revoked_at is None
            if revoked:
                self._revoke(session, row, reason, trace, _now())
        if revoked:
            self._events_committed()
        await self._announce_revocations(user_id)

    async def list_sessions(self, cmd: ListSessions) -> SessionList:
        """The user's live sessions, most recently used first."""
        now = _now()
        async with self._sessions() as session:
            rows = await session.exec(
                select(SessionRow)
                .where(
                    SessionRow.user_id == cmd.user_id,
                    col(SessionRow.revoked_at).is_(None),
                    SessionRow.last_used_at > now - timedelta(seconds=self._tokens.refresh_ttl),
                )
                .order_by(col(SessionRow.last_used_at).desc(), col(SessionRow.id))
            )
            return SessionList(
                sessions=tuple(
                    SessionInfo(
                        id=row.id,
                        created_at=row.created_at,
                        last_used_at=row.last_used_at,
                        user_agent=row.user_agent,
                        ip=row.ip,
                        current=row.id == cmd.session_id,
                    )
                    for row in rows.all()
                )
            )

    async def _handled(self, command_id: str, reply: type[ReplyT]) -> ReplyT | None:
        """The reply a command got when it was handled before, if it was."""
        async with self._sessions() as session:
            row = await session.get(HandledCommand, command_id)
        return reply.model_validate_json(row.reply) if row is not None else None

    async def _once(self, command_id: str, effect: Callable[[AsyncSession], Awaitable[None]]) -> Done:
        """Run ``effect`` in a transaction that records the command id with its reply.

        The record goes first, so a twin delivery running at the same time fails on its
        primary key (after this one commits) and answers with this one's reply.
        """
        reply = Done()
        try:
            async with self._sessions() as session, session.begin():
                session.add(
                    HandledCommand(command_id=command_id, type=type(reply).__name__, reply=reply.model_dump_json())
                )
                await session.flush()
                await effect(session)
        except IntegrityError:
            if (first := await self._handled(command_id, Done)) is not None:
                return first
            raise
        self._events_committed()
        return reply

    async def change_password(self, cmd: ChangePassword, trace: Trace, command_id: str) -> Done:
        """Set a new password if the current one is right; the user's other sessions end.

        Once per command id: a redelivered command answers as the first delivery did.
        """
        if (first := await self._handled(command_id, Done)) is not None:
            return first
        async with self._sessions() as session:
            credential = await session.get(Credential, cmd.user_id)
        stored = credential.password_hash if credential and credential.status == CredentialStatus.ACTIVE else None
        valid, _ = await self._hasher.verify(cmd.current_password, stored)
        if not valid or stored is None:
            raise WrongPassword("The current password is wrong.")
        new_hash = await self._hasher.hash(cmd.new_password)

        async def change(session: AsyncSession) -> None:
            now = _now()
            # Only over the hash just verified: a reset meanwhile makes the proof stale.
            result: CursorResult[Any] = await session.exec(
                update(Credential)
                .where(col(Credential.user_id) == cmd.user_id, col(Credential.password_hash) == stored)
                .values(password_hash=new_hash, updated_at=now)
            )
            if result.rowcount != 1:
                raise WrongPassword("The current password is wrong.")
            await self._password_set(session, cmd.user_id, trace, now, via_reset=False, keep=cmd.session_id)

        done = await self._once(command_id, change)
        await self._announce_revocations(cmd.user_id)
        return done

    async def _password_set(
        self, session: AsyncSession, user_id: str, trace: Trace, now: datetime, *, via_reset: bool, keep: str | None
    ) -> None:
        """What follows a new password: sessions end, reset tokens die, the event."""
        reason = RevocationReason.PASSWORD_RESET if via_reset else RevocationReason.PASSWORD_CHANGED
        await self._revoke_all(session, user_id, reason, trace, now, keep=keep)
        await session.exec(
            update(PasswordReset)
            .where(col(PasswordReset.user_id) == user_id, col(PasswordReset.used_at).is_(None))
            .values(used_at=now)
        )
        self._emit(session, PasswordChanged(user_id=user_id, via_reset=via_reset), trace, user_id)

    async def request_password_reset(self, cmd: RequestPasswordReset, trace: Trace, command_id: str) -> Done:
        """Issue a reset token to an active account's mailer; the same answer for any email.

        A new token replaces the account's earlier ones. Once per command id.
        """
        if (first := await self._handled(command_id, Done)) is not None:
            return first
        # Made for unknown emails too: the work does not depend on the account existing.
        token = secrets.token_urlsafe(32)
        token_hash = _hash_token(token)
        async with self._sessions() as session:
            credential = (await session.exec(select(Credential).where(Credential.email == cmd.email))).first()
        if credential is None or credential.status != CredentialStatus.ACTIVE:
            return Done()
        user_id, email = credential.user_id, credential.email

        async def issue(session: AsyncSession) -> None:
            now = _now()
            expires_at = now + timedelta(seconds=self._tokens.reset_ttl)
            await session.exec(
                update(PasswordReset)
                .where(col(PasswordReset.user_id) == user_id, col(PasswordReset.used_at).is_(None))
                .values(used_at=now)
            )
            session.add(PasswordReset(token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at))
            requested = PasswordResetRequested(user_id=user_id, email=email, token=token, expires_at=expires_at)
            self._emit(session, requested, trace, user_id)

        return await self._once(command_id, issue)

    async def confirm_password_reset(self, cmd: ConfirmPasswordReset, trace: Trace, command_id: str) -> Done:
        """Set a new password with a valid reset token, which is spent; every session ends.

        Once per command id: a redelivered command answers as the first delivery did.
        """
        if (first := await self._handled(command_id, Done)) is not None:
            return first
        token_hash = _hash_token(cmd.token)
        now = _now()
        async with self._sessions() as session:
            reset = await session.get(PasswordReset, token_hash)
        if reset is None or reset.used_at is not None or reset.expires_at <= now:
            raise InvalidResetToken(RESET_REFUSED)
        new_hash = await self._hasher.hash(cmd.new_password)
        user_id = reset.user_id

        async def set_password(session: AsyncSession) -> None:
            now = _now()
            # Spend it only if still unspent and unexpired: of two racing uses, one wins.
            spent: CursorResult[Any] = await session.exec(
                update(PasswordReset)
                .where(
                    col(PasswordReset.token_hash) == token_hash,
                    col(PasswordReset.used_at).is_(None),
                    col(PasswordReset.expires_at) > now,
                )
                .values(used_at=now)
            )
            credential = await session.get(Credential, user_id)
            if spent.rowcount != 1 or credential is None or credential.status != CredentialStatus.ACTIVE:
                raise InvalidResetToken(RESET_REFUSED)
            credential.password_hash = new_hash
            credential.updated_at = now
            session.add(credential)
            await self._password_set(session, user_id, trace, now, via_reset=True, keep=None)

        done = await self._once(command_id, set_password)
        await self._announce_revocations(user_id)
        return done

    def jwks(self) -> Jwks:
        """The public keys tokens are verified with."""
        return Jwks(keys=tuple(self._keys.jwks()))

    async def delete_account(
        self, cmd: DeleteAccount, trace: Trace, notify: Notify | None = None, *, command_id: str
    ) -> AccountDeletion:
        """Start deleting an account: hold its credential, end every session, ask users for the profile.

        The sessions' tokens are refused at the gateway before this returns. A deletion
        already under way is answered with its state (a redelivered command, a second
        click); NotFound for an account that is gone or was never completed. Two
        deliveries of one command at once collide on the deletion id: the loser fails,
        and its requester has the winner's answer.
        """
        deletion_id = _deletion_id_of(command_id)
        row: AccountDeletionRow | None = None
        async with self._sessions() as session, session.begin():
            credential = await session.get(Credential, cmd.user_id)
            if (first := await session.get(AccountDeletionRow, deletion_id)) is not None:
                row = first  # this very command, delivered again: its saga, however far it got
            elif credential is not None and credential.status == CredentialStatus.DELETING:
                row = await self._running_deletion(session, cmd.user_id)
            elif credential is not None and credential.status == CredentialStatus.ACTIVE:
                now = _now()
                credential.status = CredentialStatus.DELETING
                credential.updated_at = now
                session.add(credential)
                row = AccountDeletionRow(
                    id=deletion_id,
                    user_id=cmd.user_id,
                    notify_to=notify.channel if notify else None,
                    notify_key=notify.key if notify else None,
                )
                session.add(row)
                await self._revoke_all(session, cmd.user_id, RevocationReason.ACCOUNT_DELETED, trace, now)
                self._emit(session, AccountDeletionStarted(deletion_id=row.id, user_id=cmd.user_id), trace, cmd.user_id)
        if row is None:
            raise NotFound("No such account.")
        self._events_committed()
        await self._announce_revocations(cmd.user_id)
        return deletion_of(row)

    async def _running_deletion(self, session: AsyncSession, user_id: str) -> AccountDeletionRow | None:
        return (
            await session.exec(
                select(AccountDeletionRow).where(
                    AccountDeletionRow.user_id == user_id, AccountDeletionRow.state == RegistrationState.PENDING
                )
            )
        ).first()

    async def account_deletion(self, deletion_id: str) -> AccountDeletion:
        """The state of one account deletion saga."""
        async with self._sessions() as session:
            row = await session.get(AccountDeletionRow, deletion_id)
        if row is None:
            raise NotFound("No such account deletion.")
        return deletion_of(row)

    async def on_profile_deleted(
        self, event: ProfileDeleted, event_id: str, trace: Trace
    ) -> tuple[AccountDeletion, Notify | None] | None:
        """Saga step: the profile is gone, so delete the credential, sessions and tokens; AccountDeleted.

        The account's registrations go too (they hold its email and name); the deletion
        row stays, without either, to answer its status URL.
        """
        async with self._sessions() as session, session.begin():
            row = await self._pending_saga(session, event_id, AccountDeletionRow, event.deletion_id)
            if row is None:
                return None
            user_id = row.user_id
            session_ids = select(SessionRow.id).where(SessionRow.user_id == user_id)
            await session.exec(delete(SpentRefreshToken).where(col(SpentRefreshToken.session_id).in_(session_ids)))
            for table in (SessionRow, PasswordReset, RegistrationRow, Credential):
                await session.exec(delete(table).where(col(table.user_id) == user_id))
            row.state = RegistrationState.COMPLETED
            row.updated_at = _now()
            session.add(row)
            self._emit(session, AccountDeleted(deletion_id=row.id, user_id=user_id), trace, user_id)
        self._events_committed()
        return deletion_of(row), _notify_of(row)

    async def on_profile_deletion_failed(
        self, event: ProfileDeletionFailed, event_id: str, trace: Trace
    ) -> tuple[AccountDeletion, Notify | None] | None:
        """Saga compensation: the profile stays, so the credential is active again; AccountDeletionFailed.

        The sessions ended by the deletion stay ended: the user logs in again.
        """
        async with self._sessions() as session, session.begin():
            row = await self._pending_saga(session, event_id, AccountDeletionRow, event.deletion_id)
            if row is None:
                return None
            credential = await session.get(Credential, row.user_id)
            if credential is not None and credential.status == CredentialStatus.DELETING:
                credential.status = CredentialStatus.ACTIVE
                credential.updated_at = _now()
                session.add(credential)
            _mark_failed(row, event.reason.value, event.message)
            session.add(row)
            failed = AccountDeletionFailed(
                deletion_id=row.id, user_id=row.user_id, reason=event.reason, message=event.message
            )
            self._emit(session, failed, trace, row.user_id)
        self._events_committed()
        return deletion_of(row), _notify_of(row)


def _notify_of(row: RegistrationRow | AccountDeletionRow) -> Notify | None:
    """Whom to tell how the saga ended: the requester that asked to be told, if any."""
    if row.notify_to and row.notify_key:
        return Notify(channel=row.notify_to, key=row.notify_key)
    return None


def _mark_failed(row: RegistrationRow | AccountDeletionRow, reason: str, message: str) -> None:
    """End a saga's row as failed, saying why."""
    row.state = RegistrationState.FAILED
    row.reason = reason
    row.reason_message = message
    row.updated_at = _now()


async def set_admin(sessions: SessionFactory, email: str, *, admin: bool) -> str:
    """Grant (or revoke) the admin role of the account with ``email``; its user id.

    It shows in the access tokens issued from the account's next login or refresh on.
    NotFound when no active account has this email.
    """
    async with sessions() as session, session.begin():
        credential = (await session.exec(select(Credential).where(Credential.email == email.lower()))).first()
        if credential is None or credential.status != CredentialStatus.ACTIVE:
            raise NotFound(f"no account has the email {email}")
        roles = set(credential.roles.split())
        roles = roles | {ADMIN} if admin else roles - {ADMIN}
        credential.roles = " ".join(sorted(roles))
        credential.updated_at = _now()
        session.add(credential)
        return credential.user_id
