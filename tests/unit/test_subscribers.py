"""The subscriber helpers: dispatch by event type, contexts, and idempotent handling."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from bus.settings import BusSettings
from bus.subscribers import EventContext, Subscriber
from schemas.events import Event, LoginFailed, UserLoggedIn, UserUpdated

LOGIN = UserLoggedIn(user_id="u1", session_id="s1")
FAILED = LoginFailed(user_id="u1", reason="invalid_password")


class MemoryInbox:
    """An Idempotency that remembers in a set; forgets an event whose handler raised."""

    def __init__(self) -> None:
        self.handled: set[str] = set()

    @asynccontextmanager
    async def once(self, event_id: str) -> AsyncIterator[bool]:
        if event_id in self.handled:
            yield False
            return
        yield True
        self.handled.add(event_id)


class FakeMessage:
    """What Subscriber.handle reads of a FastStream stream message."""

    def __init__(self, event: Event, headers: dict[str, Any], channel: str = "events.auth") -> None:
        self.body = event.model_dump_json().encode()
        self.headers = headers
        self.raw_message = {"channel": channel}
        self.message_id = str(headers.get("id", ""))
        self.correlation_id = str(headers.get("correlation_id", ""))


async def test_each_event_goes_to_the_handler_of_its_type() -> None:
    subscriber = Subscriber("events.auth")
    seen: list[tuple[str, Event, str]] = []

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        seen.append(("login", event, ctx.event_id))

    @subscriber.on(LoginFailed, UserUpdated)
    async def on_other(event: Event, ctx: EventContext) -> None:
        seen.append(("other", event, ctx.event_id))

    assert await subscriber.dispatch(LOGIN, EventContext("e1"))
    assert await subscriber.dispatch(FAILED, EventContext("e2"))
    assert set(subscriber.event_types) == {UserLoggedIn, LoginFailed, UserUpdated}
    assert seen == [("login", LOGIN, "e1"), ("other", FAILED, "e2")]


async def test_an_event_without_a_handler_is_skipped() -> None:
    subscriber = Subscriber("events.auth")

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        raise AssertionError("not this one")

    assert not await subscriber.dispatch(FAILED, EventContext("e1"))


def test_a_type_gets_one_handler_and_a_subscriber_needs_a_stream() -> None:
    subscriber = Subscriber("events.auth")

    @subscriber.on(UserLoggedIn)
    async def first(event: UserLoggedIn, ctx: EventContext) -> None:
        del event, ctx

    with pytest.raises(ValueError, match="UserLoggedIn already has a handler"):
        subscriber.on(UserLoggedIn)(first)
    with pytest.raises(ValueError, match="at least one event type"):
        subscriber.on()
    with pytest.raises(ValueError, match="at least one stream"):
        Subscriber()


async def test_with_an_inbox_a_redelivered_event_is_handled_once_and_a_failed_one_again() -> None:
    inbox = MemoryInbox()
    subscriber = Subscriber("events.auth", inbox=inbox)
    calls: list[str] = []
    fail = True

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        calls.append(ctx.event_id)
        if fail and ctx.event_id == "bad":
            raise RuntimeError("blip")

    assert await subscriber.dispatch(LOGIN, EventContext("e1"))
    assert not await subscriber.dispatch(LOGIN, EventContext("e1"))
    with pytest.raises(RuntimeError):
        await subscriber.dispatch(LOGIN, EventContext("bad"))
    fail = False
    assert await subscriber.dispatch(LOGIN, EventContext("bad"))
    assert calls == ["e1", "bad", "bad"]
    assert inbox.handled == {"e1", "bad"}


async def test_with_inbox_leaves_the_original_as_it_was() -> None:
    subscriber = Subscriber("events.auth")
    calls: list[str] = []

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        calls.append(ctx.event_id)

    once = subscriber.with_inbox(MemoryInbox())
    assert await once.dispatch(LOGIN, EventContext("e1"))
    assert not await once.dispatch(LOGIN, EventContext("e1"))
    assert await subscriber.dispatch(LOGIN, EventContext("e1"))
    assert subscriber.inbox is None
    assert once.streams == subscriber.streams
    assert calls == ["e1", "e1"]


async def test_handle_decodes_the_message_and_builds_its_context() -> None:
    subscriber = Subscriber("events.auth")
    contexts: list[EventContext] = []

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        assert event == LOGIN
        contexts.append(ctx)

    headers = {
        "id": "e1",
        "type": "UserLoggedIn",
        "version": 1,
        "occurred_at": "2026-01-02T03:04:05.000006+00:00",
        "correlation_id": "c1",
        "producer": "auth",
        "x-busway-claimed": "1",
    }
    message: Any = FakeMessage(LOGIN, headers, channel="test-1:events.auth")
    assert await subscriber.handle(message, prefix="test-1:")
    [ctx] = contexts
    assert ctx.event_id == "e1"
    assert ctx.occurred_at == datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert ctx.producer == "auth"
    assert ctx.stream == "events.auth"
    assert ctx.correlation_id == "c1"
    assert ctx.redelivered
    assert ctx.trace.correlation_id == "c1"
    assert ctx.trace.causation_id == "e1"

    unknown: Any = FakeMessage(LOGIN, {**headers, "type": "SomethingNew"})
    assert not await subscriber.handle(unknown)
    newer: Any = FakeMessage(LOGIN, {**headers, "version": 2})
    assert not await subscriber.handle(newer)
    assert len(contexts) == 1


def test_a_context_without_a_usable_time_gets_the_present() -> None:
    before = datetime.now(UTC)
    for value in (None, "yesterday"):
        message: Any = FakeMessage(LOGIN, {"id": "e1", "occurred_at": value})
        assert EventContext.of(message).occurred_at >= before
    naive: Any = FakeMessage(LOGIN, {"id": "e1", "occurred_at": "2026-01-02T03:04:05"})
    assert EventContext.of(naive).occurred_at.tzinfo is UTC


async def test_a_subscriber_service_serves_metrics_only_when_given_a_port() -> None:
    subscriber = Subscriber("events.auth")
    plain = subscriber.runtime("no-metrics", BusSettings())
    measured = subscriber.runtime("with-metrics", BusSettings(), metrics_port=0)
    try:
        assert plain.metrics is None
        assert measured.metrics is not None
        assert measured.metrics.port is None  # not listening until the service starts
    finally:
        await plain.redis.aclose()
        await measured.redis.aclose()
