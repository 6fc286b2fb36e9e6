"""The mailer's subscriber: events.auth in, mails out, one mail per event (Redis inbox)."""

from bus.subscribers import EventContext, Subscriber
from handlers.mailer.service import Mailer
from schemas import streams
from schemas.events import PasswordResetRequested, RegistrationCompleted, RegistrationStarted


def mail_subscriber(mailer: Mailer) -> Subscriber:
    """Handlers for the events that send (or prepare) a mail."""
    subscriber = Subscriber(streams.EVENTS_AUTH)

    @subscriber.on(RegistrationStarted)
    async def remember_recipient(event: RegistrationStarted, ctx: EventContext) -> None:
        del ctx
        await mailer.registration_started(event)

    @subscriber.on(RegistrationCompleted)
    async def welcome(event: RegistrationCompleted, ctx: EventContext) -> None:
        await mailer.welcome(event, ctx.event_id, ctx.occurred_at)

    @subscriber.on(PasswordResetRequested)
    async def password_reset(event: PasswordResetRequested, ctx: EventContext) -> None:
        await mailer.password_reset(event, ctx.event_id)

    return subscriber
