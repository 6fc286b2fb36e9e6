"""The mailer's domain, transports and settings, without Redis: fakes for the transport and recipients."""

import asyncio
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pydantic
import pytest

from bus.settings import BusSettings
from handlers.mailer.service import Mailer, MailSettings, Recipient, RecipientUnknown
from handlers.mailer.settings import MailerSettings
from handlers.mailer.transports import FileTransport, SmtpTransport
from schemas.events import PasswordResetRequested, RegistrationCompleted, RegistrationStarted

NOW = datetime.now(UTC)


class Outbox:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[EmailMessage, str]] = []

    async def send(self, mail: EmailMessage, name: str) -> str:
        self.sent.append((mail, name))
        return f"memory:{name}"


class Memory:
    """Recipients in a dict."""

    def __init__(self) -> None:
        self.kept: dict[str, Recipient] = {}

    async def remember(self, user_id: str, recipient: Recipient) -> None:
        self.kept[user_id] = recipient

    async def get(self, user_id: str) -> Recipient | None:
        return self.kept.get(user_id)


def mailer(outbox: Outbox, *, log_secrets: bool = False) -> Mailer:
    settings = MailSettings(
        sender="busway <no-reply@example.com>",
        product="busway",
        reset_url="https://app.example.com/reset?token={token}",
        max_event_age=timedelta(days=1),
        log_secrets=log_secrets,
    )
    return Mailer(outbox, Memory(), settings)


def reset_request(token: str = "a/b+c", expires_in: timedelta = timedelta(minutes=30)) -> PasswordResetRequested:
    return PasswordResetRequested(user_id="u1", email="ann@example.com", token=token, expires_at=NOW + expires_in)


async def test_the_welcome_goes_to_the_address_kept_from_the_registration() -> None:
    outbox = Outbox()
    service = mailer(outbox)
    started = RegistrationStarted(registration_id="r1", user_id="u1", email="ann@example.com", display_name="Ann")
    await service.registration_started(started)
    where = await service.welcome(RegistrationCompleted(registration_id="r1", user_id="u1"), "e1", NOW)
    [(mail, name)] = outbox.sent
    assert where == "memory:welcome-e1"
    assert name == "welcome-e1"
    assert str(mail["To"]) == "Ann <ann@example.com>"
    assert mail["From"] == "busway <no-reply@example.com>"
    assert mail["Message-ID"] == "<welcome.e1@example.com>"


async def test_no_welcome_for_an_old_registration_and_a_retry_for_an_unknown_one() -> None:
    outbox = Outbox()
    service = mailer(outbox)
    completed = RegistrationCompleted(registration_id="r1", user_id="u1")
    assert await service.welcome(completed, "e1", NOW - timedelta(days=2)) is None
    with pytest.raises(RecipientUnknown):
        await service.welcome(completed, "e1", NOW)
    assert outbox.sent == []


async def test_the_reset_mail_carries_the_quoted_token_and_is_not_sent_once_expired() -> None:
    outbox = Outbox()
    service = mailer(outbox)
    await service.password_reset(reset_request(), "e1")
    [(mail, _)] = outbox.sent
    assert "https://app.example.com/reset?token=a%2Fb%2Bc" in mail.get_content()
    assert str(mail["To"]) == "ann@example.com"
    assert await service.password_reset(reset_request(expires_in=timedelta(seconds=-1)), "e2") is None
    assert len(outbox.sent) == 1


@pytest.mark.parametrize(("log_secrets", "logged"), [(True, True), (False, False)])
async def test_the_reset_link_is_logged_in_development_only(
    log_records: list[Any], *, log_secrets: bool, logged: bool
) -> None:
    service = mailer(Outbox(), log_secrets=log_secrets)
    await service.password_reset(reset_request(token="secret-token-123"), "e1")
    messages = [record["message"] for record in log_records]
    assert any("ann@example.com" in message for message in messages)
    assert any("secret-token-123" in message for message in messages) is logged


async def test_the_file_transport_writes_one_readable_eml_per_mail(tmp_path: Path) -> None:
    outbox = Outbox()
    await mailer(outbox).password_reset(reset_request(), "e1")
    mail, name = outbox.sent[0]
    transport = FileTransport(tmp_path / "mail")
    first = await transport.send(mail, name)
    second = await transport.send(mail, name)
    assert first != second
    files = sorted((tmp_path / "mail").iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    parsed = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    assert parsed["Subject"] == "Reset your busway password"


def test_development_is_the_only_environment_that_logs_secrets() -> None:
    assert MailerSettings(environment="development", _env_file=None).log_secrets
    keys = BusSettings(signing_key="s" * 40, trusted_keys={"auth": ["a" * 40]}, _env_file=None)  # type: ignore[arg-type]
    assert not MailerSettings(environment="production", bus=keys, _env_file=None).log_secrets


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("reset_url", "https://example.com/reset", "{token}"),
        ("reset_url", "https://example.com/{user}?t={token}", "{token}"),
        ("reset_url", "ftp://example.com/{token}", "http"),
        ("sender", "nobody", "address"),
        ("smtp_username", "me", "go together"),
    ],
)
def test_bad_mailer_settings_are_refused(field: str, value: str, says: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=says):
        MailerSettings.model_validate({field: value})


async def test_the_smtp_transport_hands_the_mail_to_the_server() -> None:
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Just enough SMTP (RFC 5321) to accept one mail."""
        writer.write(b"220 test ESMTP\r\n")
        while line := await reader.readline():
            command = line.strip().upper()
            if command == b"DATA":
                writer.write(b"354 go ahead\r\n")
                body = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    body += chunk
                received.append(body)
                writer.write(b"250 queued\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outbox = Outbox()
        await mailer(outbox).password_reset(reset_request(), "e1")
        mail, name = outbox.sent[0]
        where = await SmtpTransport("127.0.0.1", port, timeout=5).send(mail, name)
    finally:
        server.close()
        await server.wait_closed()
    assert where == f"smtp://127.0.0.1:{port}"
    [body] = received
    assert b"Subject: Reset your busway password" in body
    assert b"To: ann@example.com" in body
