"""The mailer: a welcome mail once per registration, a reset link once per request."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from bus import wire
from schemas.events import PasswordResetRequested
from tests.e2e.conftest import new_email, register
from tests.harness import Databases, System, eventually, run_system, signer_as

pytestmark = pytest.mark.e2e


@pytest.fixture
async def system(redis_url: str, databases: Databases) -> AsyncIterator[System]:
    """The system with the mailer, writing mails into ``system.mail_dir``."""
    async with run_system(databases, redis_url=redis_url, include=("mailer",)) as running:
        yield running


def mails_to(system: System, email: str) -> list[EmailMessage]:
    return [mail for mail in system.mails() if email in str(mail["To"])]


async def event_id_of(system: System, event_type: str, user_id: str) -> str:
    entries: list[Any] = await system.redis.xrange(system.stream("events.auth")) or []
    for _, fields in entries:
        message = json.loads(fields[wire.DATA_FIELD.encode()])
        if message["type"] == event_type and message["payload"]["user_id"] == user_id:
            return str(message["id"])
    raise LookupError(event_type)


async def publish_reset_request(system: System, email: str, token: str) -> str:
    """What auth publishes when someone asks to reset ``email``'s password; the event's id."""
    event = PasswordResetRequested(
        user_id=uuid.uuid4().hex, email=email, token=token, expires_at=datetime.now(UTC) + timedelta(minutes=30)
    )
    event_id = uuid.uuid4().hex
    headers = {
        "id": event_id,
        "type": "PasswordResetRequested",
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": uuid.uuid4().hex,
        "producer": "auth",
    }
    await system.redis.xadd(
        system.stream("events.auth"),
        {wire.DATA_FIELD: wire.encode(headers, event.model_dump_json().encode(), signer=signer_as("auth"))},
    )
    return event_id


async def test_a_new_account_gets_one_welcome_mail_even_when_the_event_comes_twice(system: System) -> None:
    email = new_email()
    user_id = await register(system, email, "Ann Example")

    async def welcomed() -> list[EmailMessage] | None:
        return mails_to(system, email) or None

    [mail] = await eventually(welcomed, what="the welcome mail")
    assert mail["Subject"] == "Welcome to busway"
    assert mail["To"].addresses[0].display_name == "Ann Example"
    assert mail["To"].addresses[0].addr_spec == email
    assert "Hello Ann Example" in mail.get_content()

    completed = await event_id_of(system, "RegistrationCompleted", user_id)
    assert completed in mail["Message-ID"]
    await system.deliver_again("events.auth", completed)
    await eventually(lambda: system.caught_up("mailer", "events.auth"), what="the mailer to handle the copy")
    assert not await system.redis.exists(system.stream("dlq.events.auth"))
    assert len(mails_to(system, email)) == 1


async def test_a_reset_request_mails_the_link_once_and_logs_no_token(system: System, log_records: list[Any]) -> None:
    email, token = new_email(), f"tok-{uuid.uuid4().hex}"
    event_id = await publish_reset_request(system, email, token)

    async def mailed() -> list[EmailMessage] | None:
        return mails_to(system, email) or None

    [mail] = await eventually(mailed, what="the reset mail")
    assert mail["Subject"] == "Reset your busway password"
    assert f"http://localhost:8000/reset-password?token={token}" in mail.get_content()

    await system.deliver_again("events.auth", event_id)
    await eventually(lambda: system.caught_up("mailer", "events.auth"), what="the mailer to handle the copy")
    assert len(mails_to(system, email)) == 1
    logged = [record["message"] for record in log_records if record["extra"].get("service") == "mailer"]
    assert any(email in line for line in logged)
    assert not any(token in line for line in logged)  # BUSWAY_ENV=test: tokens are logged in development only
