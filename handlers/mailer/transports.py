"""How mails leave the mailer: into files (development) or to an SMTP server."""

import asyncio
import os
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol


class MailTransport(Protocol):
    """Delivers one mail."""

    async def send(self, mail: EmailMessage, name: str) -> str:
        """Deliver ``mail`` (``name``: a short, file-safe label for it); where it went."""
        ...


class FileTransport:
    """Writes each mail as an ``.eml`` file into a folder: open it with any mail client."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, mail: EmailMessage, name: str) -> str:
        """Write ``<UTC time>-<name>.eml`` atomically; its path."""
        return await asyncio.to_thread(self._write, mail, name)

    def _write(self, mail: EmailMessage, name: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.folder / f"{stamp}-{name}.eml"
        partial = path.with_suffix(".eml.partial")
        # Written aside, then renamed: a reader of the folder never sees half a mail.
        partial.write_bytes(mail.as_bytes())
        os.replace(partial, path)
        return str(path)


class SmtpTransport:
    """Hands each mail to an SMTP server (blocking smtplib, in a worker thread)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Literal["none", "starttls", "tls"] = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout

    async def send(self, mail: EmailMessage, name: str) -> str:
        """Send ``mail``; ``smtp://host:port``."""
        del name
        await asyncio.to_thread(self._send, mail)
        return f"smtp://{self.host}:{self.port}"

    def _send(self, mail: EmailMessage) -> None:
        context = ssl.create_default_context()
        if self._security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self._timeout)
        with client:
            if self._security == "starttls":
                client.starttls(context=context)
            if self._username is not None and self._password is not None:
                client.login(self._username, self._password)
            client.send_message(mail)
