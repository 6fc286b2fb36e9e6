"""Subscribers to busway's events in a few lines: typed handlers, dispatched by event type.

::

    subscriber = Subscriber(streams.EVENTS_AUTH)

    @subscriber.on(UserLoggedIn)
    async def on_login(event: UserLoggedIn, ctx: EventContext) -> None:
        print(event.user_id, "logged in at", ctx.occurred_at)

    subscriber.run("audit-printer")   # its own consumer group, "audit-printer"

Each handler gets the typed event (``schemas.events``) and an :class:`EventContext` (the
event's id, time, producer, trace). Events of types without a handler, and of types or
versions this code does not know, are acknowledged and skipped. A handler that raises
leaves its event pending: it is handed out again after ``BUS_CLAIM_IDLE_MS`` and moves
to ``dlq.<stream>`` after ``BUS_MAX_DELIVERIES`` (see ``bus.broker.Consumer.events``).

Delivery is at least once. A handler is idempotent by recording the ids it handled:
in its database, in the transaction of its effect (``db.inbox.first_time``), or, for a
subscriber without one, in Redis (``once=True``: :class:`bus.idempotency.RedisInbox`).
docs/subscribers.md has a complete example and how to test one.
"""

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, overload

from faststream.message import StreamMessage
from faststream.redis import RedisBroker
from redis.asyncio import Redis

from bus.broker import BusMessage, Consumer, create_broker, create_redis, instance_id
from bus.events import decode_event
from bus.idempotency import RedisInbox
from bus.logs import configure_logging
from bus.metrics import HandlerMetrics, MetricsServer
from bus.middleware import CLAIMED
from bus.process import run_async
from bus.runtime import Component, ServiceRuntime, serve
from bus.settings import BusSettings
from schemas.envelope import OCCURRED_AT, PRODUCER, Trace
from schemas.events import Event

E = TypeVar("E", bound=Event)
E2 = TypeVar("E2", bound=Event)
E3 = TypeVar("E3", bound=Event)

EventHandler = Callable[[E, "EventContext"], Awaitable[None]]
"""``async def handler(event: SomeEvent, ctx: EventContext) -> None``."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EventContext:
    """What a handler knows about the event besides its payload."""

    event_id: str
    """The event's id: the same on every delivery (and replay) of it. Record it to handle it once."""
    occurred_at: datetime = field(default_factory=_now)
    """When the producer committed it (UTC)."""
    producer: str = ""
    """The service that published it."""
    stream: str = ""
    """The stream it was read from, without the deployment's prefix."""
    correlation_id: str = ""
    """The correlation id of the request that led to it."""
    redelivered: bool = False
    """Whether it was handed out again after a failed or abandoned delivery."""

    @property
    def trace(self) -> Trace:
        """What messages published because of this event inherit: its correlation, it as the cause."""
        return Trace(correlation_id=self.correlation_id or self.event_id, causation_id=self.event_id)

    @classmethod
    def of(cls, message: StreamMessage[Any], prefix: str = "") -> "EventContext":
        """The context of a message read from a stream."""
        headers = message.headers
        raw = message.raw_message if isinstance(message.raw_message, dict) else {}
        channel = raw.get("channel", "")
        if isinstance(channel, bytes):
            channel = channel.decode()
        return cls(
            event_id=message.message_id,
            occurred_at=_parse_time(headers.get(OCCURRED_AT)),
            producer=str(headers.get(PRODUCER, "")),
            stream=str(channel).removeprefix(prefix),
            correlation_id=message.correlation_id,
            redelivered=CLAIMED in headers,
        )


def _parse_time(value: Any) -> datetime:
    if not value:
        return _now()
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return _now()
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Idempotency(Protocol):
    """Records handled events: ``async with inbox.once(event_id) as first: if first: ...``."""

    def once(self, event_id: str) -> AbstractAsyncContextManager[bool]:
        """Yield whether to handle ``event_id``; remember it as handled if the block succeeds."""
        ...


class Subscriber:
    """Typed event handlers for some event streams, dispatched by event type."""

    def __init__(self, *streams: str, inbox: Idempotency | None = None) -> None:
        """Read ``streams`` (names from ``schemas.streams``, e.g. ``EVENTS_AUTH``).

        ``inbox``: run every handler through it, so a redelivered event is skipped.
        """
        if not streams:
            msg = "a subscriber reads at least one stream"
            raise ValueError(msg)
        self.streams: tuple[str, ...] = streams
        self.inbox = inbox
        self._handlers: dict[type[Event], EventHandler[Any]] = {}
        self._names: set[str] = set()
        """The names of the types with a handler: events of others are acked unread (``attach``)."""

    @overload
    def on(self, event_type: type[E], /) -> Callable[[EventHandler[E]], EventHandler[E]]: ...

    @overload
    def on(self, first: type[E], second: type[E2], /) -> Callable[[EventHandler[E | E2]], EventHandler[E | E2]]: ...

    @overload
    def on(
        self, first: type[E], second: type[E2], third: type[E3], /
    ) -> Callable[[EventHandler[E | E2 | E3]], EventHandler[E | E2 | E3]]: ...

    @overload
    def on(self, *types: type[Event]) -> Callable[[EventHandler[Event]], EventHandler[Event]]: ...

    def on(self, *types: type[Event]) -> Callable[[EventHandler[Any]], EventHandler[Any]]:
        """Register the decorated handler for events of ``types``; one handler per type.

        Annotate the event as the type, or the union of the types (``UserLoggedIn |
        LoginFailed``); with more than three, as their common base ``Event``.
        """
        if not types:
            msg = "on() needs at least one event type"
            raise ValueError(msg)

        def register(handler: EventHandler[Any]) -> EventHandler[Any]:
            for event_type in types:
                if event_type in self._handlers:
                    msg = f"{event_type.__name__} already has a handler"
                    raise ValueError(msg)
                self._handlers[event_type] = handler
                self._names.add(event_type.__name__)
            return handler

        return register

    def with_inbox(self, inbox: Idempotency) -> "Subscriber":
        """The same handlers, each run through ``inbox``."""
        copy = Subscriber(*self.streams, inbox=inbox)
        copy._handlers = dict(self._handlers)
        copy._names = set(self._names)
        return copy

    @property
    def event_types(self) -> tuple[type[Event], ...]:
        """The event types with a handler."""
        return tuple(self._handlers)

    async def dispatch(self, event: Event, ctx: EventContext) -> bool:
        """Run ``event``'s handler; whether one ran (False: no handler, or handled before)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return False
        if self.inbox is None:
            await handler(event, ctx)
            return True
        async with self.inbox.once(ctx.event_id) as first:
            if first:
                await handler(event, ctx)
        return first

    async def handle(self, message: StreamMessage[Any], prefix: str = "") -> bool:
        """Decode a stream message and dispatch it; whether a handler ran.

        A payload that does not match its contract raises (the event is retried, then
        dead-lettered); an unknown type or version is skipped.
        """
        event = decode_event(message.body, message.headers)
        if event is None:
            return False
        return await self.dispatch(event, EventContext.of(message, prefix))

    def attach(self, broker: RedisBroker, consumer: Consumer) -> None:
        """Subscribe to the streams as ``consumer``'s group (with its claimer and dead letters).

        An event of a type without a handler here is acked as it is read, unverified and
        undecoded beyond its type (``Consumer.events``' ``types``): a subscriber of a few
        types pays little for the rest of the stream.
        """
        prefix = consumer.settings.prefix
        for stream in self.streams:

            async def handle(message: BusMessage) -> None:
                await self.handle(message, prefix)

            consumer.events(broker, stream, types=self._names)(handle)

    def runtime(
        self,
        service: str,
        settings: BusSettings | None = None,
        *,
        once: bool = False,
        inbox_ttl: float = 7 * 86_400,
        instance: str | None = None,
        redis: Redis | None = None,
        components: Sequence[Component] = (),
        before_start: Sequence[Callable[[], Awaitable[None]]] = (),
        after_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> ServiceRuntime:
        """A service made of this subscriber alone, in consumer group ``service``; start it to run.

        ``once``: record handled events in Redis for ``inbox_ttl`` seconds
        (:class:`bus.idempotency.RedisInbox`), so a redelivered event is skipped.
        ``metrics_port``: count every event handled and serve ``GET /metrics`` there
        (:class:`bus.metrics.MetricsServer`; 0 takes a free port); None: no metrics.
        """
        settings = settings or BusSettings()
        redis = redis or create_redis(settings)
        subscriber = self.with_inbox(RedisInbox(redis, settings, service, ttl=inbox_ttl)) if once else self
        consumer = Consumer(settings, service, instance or instance_id(service))
        metrics = HandlerMetrics(settings) if metrics_port is not None else None
        broker = create_broker(settings, service, consumer, metrics=metrics)
        subscriber.attach(broker, consumer)
        return ServiceRuntime(
            service=service,
            broker=broker,
            redis=redis,
            consumer=consumer,
            components=components,
            before_start=before_start,
            after_stop=after_stop,
            # A subscriber alone publishes nothing through an outbox: no backlog to report.
            metrics=(
                MetricsServer(metrics, redis, consumer, host=metrics_host, port=metrics_port)
                if metrics is not None
                else None
            ),
        )

    def run(
        self,
        service: str,
        settings: BusSettings | None = None,
        *,
        once: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        """Run as service ``service`` until SIGINT or SIGTERM (a script's entry point).

        ``metrics_port``: serve ``GET /metrics`` on it (see ``runtime``).
        """
        settings = settings or BusSettings()
        configure_logging(service, settings.log_format, settings.log_level)
        runtime = self.runtime(service, settings, once=once, metrics_port=metrics_port, metrics_host=metrics_host)
        run_async(lambda: serve(runtime))
