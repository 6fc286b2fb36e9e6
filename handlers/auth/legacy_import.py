"""``python -m handlers.auth import-legacy``: the legacy monolith's users' credentials, bcrypt hashes kept."""

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from db.engine import SessionFactory
from db.legacy_users import LegacyUser, Report
from db.outbox import add_event
from handlers.auth import SERVICE
from handlers.auth.models import Credential, CredentialStatus, Outbox
from schemas.envelope import Trace
from schemas.events import CredentialImported
from schemas.streams import EVENTS_AUTH


async def import_credentials(
    sessions: SessionFactory, users: Sequence[LegacyUser], apply: bool, trace: Trace, report: Report
) -> None:
    """Each user's active credential (the bcrypt hash as it was) and a ``CredentialImported`` event.

    One transaction per user. The hash is upgraded to argon2 by the user's next login
    (``PasswordHasher.verify``). A credential under the derived id is ``present``; an
    email another credential holds, even a pending registration's, is a ``conflict``.
    """
    for user in users:
        try:
            async with sessions() as session, session.begin():
                if await session.get(Credential, user.user_id) is not None:
                    report(user.legacy_id, "present", None)
                    continue
                taken = await session.exec(select(Credential.user_id).where(Credential.email == user.email))
                if taken.first() is not None:
                    report(user.legacy_id, "conflict", "duplicate email")
                    continue
                if not apply:
                    report(user.legacy_id, "new", None)
                    continue
                session.add(
                    Credential(
                        user_id=user.user_id,
                        email=user.email,
                        password_hash=user.password_hash,
                        status=CredentialStatus.ACTIVE,
                        created_at=user.created_at,
                        updated_at=user.created_at,
                    )
                )
                event = CredentialImported(user_id=user.user_id, legacy_id=user.legacy_id, email=user.email)
                add_event(session, Outbox, EVENTS_AUTH, event, trace=trace, producer=SERVICE, subject=user.user_id)
        except IntegrityError:
            report(user.legacy_id, "conflict", "written concurrently; run the import again")
            continue
        report(user.legacy_id, "imported", None)
