"""The mailer's domain: which mail to send for which event. No bus here.

Delivery is at least once and mails cannot be taken back, so the router runs every
handler through a Redis inbox (one mail per event id), and old events send nothing: a
mailer that joins a running system reads events.auth from its start.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from loguru import logger

from handlers.mailer.mails import reset_mail, welcome_mail
from handlers.mailer.transports import MailTransport
from schemas.events import PasswordResetRequested, RegistrationCompleted, RegistrationStarted


@dataclass(frozen=True)
class Recipient:
    """Where a user's mail goes and how to greet them."""

    email: str
    display_name: str


class Recipients(Protocol):
    """Recipients kept by user id."""

    async def remember(self, user_id: str, recipient: Recipient) -> None:
        """Keep ``recipient`` for ``user_id``."""
        ...

    async def get(self, user_id: str) -> Recipient | None:
        """The recipient kept for ``user_id``."""
        ...


class RecipientUnknown(Exception):
    """A registration completed whose start this mailer has not seen (yet): try again later."""


@dataclass(frozen=True)
class MailSettings:
    """What every mail needs: sender, product name, reset link, how old an event may be."""

    sender: str
    product: str
    reset_url: str
    max_event_age: timedelta
    log_secrets: bool = False


class Mailer:
    """Turns account events into mails."""

    def __init__(self, transport: MailTransport, recipients: Recipients, settings: MailSettings) -> None:
        self._transport = transport
        self._recipients = recipients
        self._settings = settings

    async def registration_started(self, event: RegistrationStarted) -> None:
        """Keep the new user's address and name for the welcome mail."""
        await self._recipients.remember(event.user_id, Recipient(event.email, event.display_name))

    async def welcome(self, event: RegistrationCompleted, event_id: str, occurred_at: datetime) -> str | None:
        """Send the welcome mail; where it went (None: too old to welcome)."""
        now = datetime.now(UTC)
        if now - occurred_at > self._settings.max_event_age:
            logger.info("no welcome mail for user {}: registered at {}, too long ago", event.user_id, occurred_at)
            return None
        recipient = await self._recipients.get(event.user_id)
        if recipient is None:
            msg = f"no address for user {event.user_id}: its RegistrationStarted was not handled"
            raise RecipientUnknown(msg)
        mail = welcome_mail(
            sender=self._settings.sender,
            email=recipient.email,
            display_name=recipient.display_name,
            product=self._settings.product,
            event_id=event_id,
            now=now,
        )
        where = await self._transport.send(mail, f"welcome-{event_id}")
        logger.info("welcome mail to {} sent: {}", recipient.email, where)
        return where

    async def password_reset(self, event: PasswordResetRequested, event_id: str) -> str | None:
        """Send the reset link; where it went (None: the token has expired already)."""
        now = datetime.now(UTC)
        if event.expires_at <= now:
            logger.info("no reset mail for user {}: the token expired at {}", event.user_id, event.expires_at)
            return None
        link = self._settings.reset_url.format(token=quote(event.token, safe=""))
        mail = reset_mail(
            sender=self._settings.sender,
            email=event.email,
            link=link,
            expires_at=event.expires_at.astimezone(UTC),
            product=self._settings.product,
            event_id=event_id,
            now=now,
        )
        where = await self._transport.send(mail, f"reset-{event_id}")
        if self._settings.log_secrets:
            logger.info("password reset mail to {} sent: {} (development: {})", event.email, where, link)
        else:
            logger.info("password reset mail to {} sent: {}", event.email, where)
        return where
