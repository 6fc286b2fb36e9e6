"""A command delivered twice (a retry, a redelivery after a crash) has one effect and one answer."""

import pytest
from sqlmodel import func, select

from bus.correlation import new_id
from bus.rpc import BusClient
from handlers.auth.models import Credential, RegistrationRow
from schemas import streams
from schemas.commands import RegisterUser
from schemas.errors import ReplyError
from schemas.replies import Registration
from tests.e2e.conftest import PASSWORD, new_email
from tests.harness import System

pytestmark = pytest.mark.integration


async def test_a_repeated_register_command_returns_the_first_outcome(system: System) -> None:
    client = BusClient(system.bus, f"idem-{new_id()}", producer="gateway")  # auth takes commands from the gateway alone
    await client.start()
    try:
        command = RegisterUser(email=new_email(), password=PASSWORD, display_name="Twice")
        message_id = new_id()
        answers = []
        for _ in range(2):  # the same message id twice, as a redelivery would bring it
            future = client.expect(message_id)
            await client.send(streams.AUTH_REGISTER, command, message_id=message_id)
            answers.append(await client.wait(future, Registration, timeout=10, what="register"))
            client.forget(message_id)
        other = client.expect(other_id := new_id())
        await client.send(streams.AUTH_REGISTER, command, message_id=other_id)
        with pytest.raises(ReplyError, match="already exists"):  # a new command for the email: a conflict
            await client.wait(other, Registration, timeout=10, what="register")
    finally:
        await client.stop()
    assert answers[0].registration_id == answers[1].registration_id
    assert answers[0].user_id == answers[1].user_id
    async with system.sessions("auth")() as session:
        mine = RegistrationRow.email == command.email
        registrations = (await session.exec(select(func.count()).select_from(RegistrationRow).where(mine))).one()
        credentials = (
            await session.exec(select(func.count()).select_from(Credential).where(Credential.email == command.email))
        ).one()
    assert (registrations, credentials) == (1, 1)
