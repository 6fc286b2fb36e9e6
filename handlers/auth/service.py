"""The auth domain: registrations, credentials, logins, tokens. No bus, no HTTP here."""

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from db.engine import SessionFactory
from db.outbox import add_event
from handlers.auth import SERVICE
from handlers.auth.keys import KeyRing
from handlers.auth.models import Credential, CredentialStatus, Inbox, Outbox, RegistrationRow, SessionRow
from handlers.auth.passwords import PasswordHasher
from schemas.commands import LogIn, RegisterUser
from schemas.envelope import Trace
from schemas.errors import ErrorCode, ReplyError
from schemas.events import (
    Event,
    LoginFailed,
    RegistrationCompleted,
    RegistrationFailed,
    RegistrationStarted,
    UserCreated,
    UserCreationFailed,
    UserLoggedIn,
)
from schemas.replies import Jwks, Registration, RegistrationState, TokenPair, UserProfile
from schemas.streams import EVENTS_AUTH


class EmailTaken(ReplyError):
    """An account with this email exists or is being registered."""

    code = ErrorCode.EMAIL_TAKEN


def _registration_id_of(command_id: str) -> str:
    """A registration id derived from the command that began it (any id format in, hex out)."""
    return hashlib.sha256(f"registration:{command_id}".encode()).hexdigest()[:32]


class InvalidCredentials(ReplyError):
    """Unknown email or wrong password: deliberately one message for both."""

    code = ErrorCode.INVALID_CREDENTIALS


class NotFound(ReplyError):
    """No such thing."""

    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class Notify:
    """Where to report a saga's outcome: the requester's inbox and the key it waits on."""

    channel: str
    key: str


@dataclass(frozen=True)
class TokenSettings:
    """What goes into the access tokens auth signs."""

    issuer: str
    audience: str
    ttl: int


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._keys = keys
        self._tokens = tokens
        self._events_committed = events_committed

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

    async def on_user_created(
        self, event: UserCreated, event_id: str, trace: Trace
    ) -> tuple[Registration, Notify | None] | None:
        """Saga step: the profile exists, so activate the credentials."""
        async with self._sessions() as session, session.begin():
            if not await self._first_time(session, event_id):
                return None
            row = await session.get(RegistrationRow, event.registration_id)
            credential = await session.get(Credential, event.user_id)
            if row is None or row.state != RegistrationState.PENDING or credential is None:
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
            if not await self._first_time(session, event_id):
                return None
            row = await session.get(RegistrationRow, event.registration_id)
            if row is None or row.state != RegistrationState.PENDING:
                return None
            credential = await session.get(Credential, event.user_id)
            if credential is not None and credential.status == CredentialStatus.PENDING:
                await session.delete(credential)
            row.state = RegistrationState.FAILED
            row.reason = event.reason.value
            row.reason_message = event.message
            row.updated_at = _now()
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
        access_token, ttl = self._keys.sign(
            {"iss": self._tokens.issuer, "aud": self._tokens.audience, "sub": credential.user_id, "sid": session_id},
            self._tokens.ttl,
        )
        return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=ttl)

    async def _login_failed(self, user_id: str, cmd: LogIn, trace: Trace) -> None:
        """Record a wrong password for an existing account: LoginFailed, for the owner's trail."""
        async with self._sessions() as session, session.begin():
            failed = LoginFailed(user_id=user_id, reason="invalid_password", user_agent=cmd.user_agent, ip=cmd.ip)
            self._emit(session, failed, trace, user_id)
        self._events_committed()

    def jwks(self) -> Jwks:
        """The public keys tokens are verified with."""
        return Jwks(keys=tuple(self._keys.jwks()))


def _notify_of(row: RegistrationRow) -> Notify | None:
    if row.notify_to and row.notify_key:
        return Notify(channel=row.notify_to, key=row.notify_key)
    return None
