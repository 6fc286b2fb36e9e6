"""The mails the mailer writes. Plain text: readable anywhere, nothing to render."""

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr


def _message(sender: str, to: Address, subject: str, body: str, message_id: str, now: datetime) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(now)
    # The same on a retry of the same event: receiving systems can drop the duplicate.
    mail["Message-ID"] = f"<{message_id}@{parseaddr(sender)[1].rpartition('@')[2] or 'busway'}>"
    mail.set_content(body)
    return mail


def welcome_mail(
    *, sender: str, email: str, display_name: str, product: str, event_id: str, now: datetime
) -> EmailMessage:
    """Welcome to a new account."""
    body = (
        f"Hello {display_name},\n\n"
        f"your {product} account for {email} is ready. You can sign in now.\n\n"
        f"If you did not create it, ignore this mail: nothing else happens.\n"
    )
    return _message(sender, _address(display_name, email), f"Welcome to {product}", body, f"welcome.{event_id}", now)


def reset_mail(
    *, sender: str, email: str, link: str, expires_at: datetime, product: str, event_id: str, now: datetime
) -> EmailMessage:
    """A link that lets the account's owner choose a new password."""
    body = (
        f"Someone, hopefully you, asked to reset the password of your {product} account.\n\n"
        f"Choose a new password here (the link works once, until {expires_at:%Y-%m-%d %H:%M} UTC):\n\n"
        f"{link}\n\n"
        f"If it was not you, ignore this mail: your password stays as it is.\n"
    )
    return _message(sender, _address("", email), f"Reset your {product} password", body, f"reset.{event_id}", now)


def _address(display_name: str, email: str) -> Address:
    username, _, domain = email.rpartition("@")
    return Address(display_name=display_name, username=username, domain=domain)
