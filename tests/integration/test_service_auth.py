"""Service-to-service authentication on the running system: forged messages are refused.

A command, event or reply must carry its producer's signature (docs/security.md), and a
command's producer must be on its subscriber's allow-list. A refused command or event is
acked, logged and never run; a forged reply never resolves a request.
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from bus import wire
from bus.correlation import new_id
from bus.rpc import BusClient
from bus.signing import Signer
from gateway.state import gateway_of
from handlers.users.models import Profile
from schemas import streams
from schemas.commands import UpdateUser
from schemas.errors import ErrorCode, ReplyError
from schemas.replies import Pong, UserProfile
from tests.e2e.conftest import Account, register_and_login
from tests.harness import System, eventually, signed, signer_as

pytestmark = pytest.mark.integration

FORGED_NAME = "Mallory Was Here"


def update_command(user_id: str, *, producer: str = "gateway", reply_to: str | None = None) -> dict[str, Any]:
    """A users.update command as a dict, as a forger would write it."""
    message: dict[str, Any] = {
        "id": new_id(),
        "type": "UpdateUser",
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": new_id(),
        "producer": producer,
        "headers": {"reply_to": reply_to} if reply_to else {},
        "payload": {"user_id": user_id, "display_name": FORGED_NAME},
    }
    return message


def unsigned(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def signed_with_wrong_key(message: dict[str, Any]) -> bytes:
    data = json.loads(signed(message))
    headers = {key: value for key, value in data.items() if key not in {"headers", "payload"}}
    headers.update(data.get("headers") or {})
    return wire.encode(headers, json.dumps(message["payload"]).encode(), signer=Signer("gateway", "not the key " * 4))


def tampered(message: dict[str, Any]) -> bytes:
    """Signed for a harmless name, then the payload changed on the way."""
    honest = {**message, "payload": {**message["payload"], "display_name": "Harmless"}}
    return signed(honest).replace(b'"Harmless"', json.dumps(FORGED_NAME).encode())


async def display_name(system: System, user_id: str) -> str:
    async with system.sessions("users")() as session:
        profile = await session.get(Profile, user_id)
    assert profile is not None
    return profile.display_name


@pytest.fixture
async def victim(system: System) -> Account:
    return await register_and_login(system, "Victim")


@pytest.mark.parametrize(
    ("forge", "producer", "reason"),
    [
        (unsigned, "gateway", "no signature"),
        (signed_with_wrong_key, "gateway", "no trusted key"),
        (tampered, "gateway", "bad signature"),
        (signed, "mailer", "forbidden"),  # a real key, but mailer may not send users.update
    ],
    ids=["unsigned", "wrong-key", "tampered-payload", "sender-not-allowed"],
)
async def test_a_forged_command_is_acked_logged_and_never_run(
    system: System, victim: Account, log_records: list[Any], forge: Any, producer: str, reason: str
) -> None:
    message = update_command(victim.user_id, producer=producer)
    stream = system.stream(streams.USERS_UPDATE)
    await system.redis.xadd(stream, {wire.DATA_FIELD: forge(message)})

    await eventually(lambda: system.caught_up("users", streams.USERS_UPDATE), what="the forged command acked")
    assert await display_name(system, victim.user_id) == "Victim"
    refusals = [r for r in log_records if r["level"].name == "WARNING" and message["id"] in r["message"]]
    assert len(refusals) == 1
    assert reason in refusals[0]["message"]
    assert repr(producer) in refusals[0]["message"]
    assert not [r for r in log_records if FORGED_NAME in r["message"]]  # no payload in the logs


async def test_an_unauthenticated_command_gets_no_reply(system: System, victim: Account) -> None:
    channel = system.stream(f"inbox.forger-{uuid.uuid4().hex[:8]}")
    pubsub = system.redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        message = update_command(victim.user_id, reply_to=channel)
        await system.redis.xadd(system.stream(streams.USERS_UPDATE), {wire.DATA_FIELD: unsigned(message)})
        await eventually(lambda: system.caught_up("users", streams.USERS_UPDATE), what="the forged command acked")
        # A reply would have been published before the ack (one pipeline): a marker sent now
        # comes after it, so the first message on the channel tells.
        await system.redis.publish(channel, b"marker")
        received: list[bytes] = []

        async def marker() -> bool:
            found = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if found is not None:
                received.append(found["data"])
            return b"marker" in received

        await eventually(marker, what="the marker")
        assert received == [b"marker"]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await display_name(system, victim.user_id) == "Victim"


async def test_a_known_service_not_on_the_allow_list_gets_a_forbidden_reply(system: System, victim: Account) -> None:
    mailer = BusClient(system.bus, f"mailer-{new_id()}", producer="mailer")
    await mailer.start()
    try:
        with pytest.raises(ReplyError) as refused:
            await mailer.request(
                streams.USERS_UPDATE, UpdateUser(user_id=victim.user_id, display_name="X"), UserProfile
            )
    finally:
        await mailer.stop()
    assert refused.value.reply.code == ErrorCode.FORBIDDEN
    assert await display_name(system, victim.user_id) == "Victim"


async def test_the_gateway_ignores_forged_replies(system: System) -> None:
    bus = gateway_of(system.app.state).bus
    key = new_id()
    future = bus.expect(key, producer="users")
    try:
        headers = {"id": new_id(), "type": "Pong", "correlation_id": "c", "causation_id": key, "producer": "users"}
        forged = b'{"service":"forged"}'
        await system.redis.publish(bus.inbox, wire.encode(headers, forged))
        await system.redis.publish(bus.inbox, wire.encode(headers, forged, signer=Signer("users", "stolen? no" * 4)))
        await system.redis.publish(bus.inbox, wire.encode(headers, forged, signer=signer_as("mailer")))  # not users'
        by_mailer = {**headers, "producer": "mailer"}  # validly signed, but users was asked
        await system.redis.publish(bus.inbox, wire.encode(by_mailer, forged, signer=signer_as("mailer")))
        await system.redis.publish(bus.inbox, wire.encode(headers, b'{"service":"users"}', signer=signer_as("users")))
        assert await BusClient.wait(future, Pong, timeout=5, what="ping") == Pong(service="users")
    finally:
        bus.forget(key)


def registration_started(user_id: str, producer: str = "auth") -> dict[str, Any]:
    return {
        "id": new_id(),
        "type": "RegistrationStarted",
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": new_id(),
        "producer": producer,
        "payload": {
            "registration_id": new_id(),
            "user_id": user_id,
            "email": f"{user_id}@example.com",
            "display_name": "Forged",
        },
    }


async def test_events_without_a_valid_signature_are_not_applied(system: System, log_records: list[Any]) -> None:
    stream = system.stream(streams.EVENTS_AUTH)
    forged = {
        "unsigned": unsigned(registration_started(forged_unsigned := new_id())),
        "by users": signed(registration_started(forged_by_users := new_id(), producer="users")),
        "tampered": signed(registration_started(honest := new_id())).replace(honest.encode(), new_id().encode()),
    }
    for data in forged.values():
        await system.redis.xadd(stream, {wire.DATA_FIELD: data})
    await system.redis.xadd(stream, {wire.DATA_FIELD: signed(registration_started(genuine := new_id()))})

    async def profile(user_id: str) -> Profile | None:
        async with system.sessions("users")() as session:
            return await session.get(Profile, user_id)

    # users reads events.auth in order: once the genuine one is applied, the others were handled.
    await eventually(lambda: profile(genuine), what="the genuine event applied")
    await eventually(lambda: system.caught_up("users", streams.EVENTS_AUTH), what="every event acked")
    for user_id in (forged_unsigned, forged_by_users, honest):
        assert await profile(user_id) is None
    refusals = [r for r in log_records if r["level"].name == "WARNING" and "refused a message" in r["message"]]
    assert len([r for r in refusals if stream in r["message"] and "users" in r["extra"].get("service", "")]) == 3
