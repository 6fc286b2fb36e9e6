"""``python -m handlers.users import-legacy``: profiles for the legacy monolith's users."""

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from db.engine import SessionFactory
from db.legacy_users import LegacyUser, Report
from db.outbox import add_event
from handlers.users import SERVICE
from handlers.users.models import Outbox, Profile
from schemas.envelope import Trace
from schemas.events import UserImported
from schemas.streams import EVENTS_USERS


async def import_profiles(
    sessions: SessionFactory, users: Sequence[LegacyUser], apply: bool, trace: Trace, report: Report
) -> None:
    """Each user's profile and its ``UserImported`` event, one transaction per user.

    A profile that exists under the user's derived id is ``present`` (a re-run changes
    nothing); an email another profile holds is a ``conflict``.
    """
    for user in users:
        try:
            async with sessions() as session, session.begin():
                if await session.get(Profile, user.user_id) is not None:
                    report(user.legacy_id, "present", None)
                    continue
                if (await session.exec(select(Profile.id).where(Profile.email == user.email))).first() is not None:
                    report(user.legacy_id, "conflict", "duplicate email")
                    continue
                if not apply:
                    report(user.legacy_id, "new", None)
                    continue
                session.add(
                    Profile(
                        id=user.user_id,
                        email=user.email,
                        display_name=user.display_name,
                        created_at=user.created_at,
                        updated_at=user.created_at,
                    )
                )
                event = UserImported(
                    user_id=user.user_id,
                    legacy_id=user.legacy_id,
                    email=user.email,
                    display_name=user.display_name,
                    created_at=user.created_at,
                )
                add_event(session, Outbox, EVENTS_USERS, event, trace=trace, producer=SERVICE, subject=user.user_id)
        except IntegrityError:
            # Someone wrote the same id or email between our check and our commit.
            report(user.legacy_id, "conflict", "written concurrently; run the import again")
            continue
        report(user.legacy_id, "imported", None)
