"""The broker factory and the naming of consumers and their groups."""

import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar, cast, get_type_hints

from faststream import AckPolicy
from faststream._internal.context import Context  # the class behind faststream.Context()
from faststream.message import StreamMessage
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage, RedisStreamMessage
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bus.batches import CommandBatches, read_directly, read_events_directly, read_on
from bus.logs import stdlib_logger
from bus.metrics import HandlerMetrics
from bus.middleware import CLAIMED, StreamRoles, middleware_for
from bus.resp import ReadConnection, RespConnection
from bus.settings import BusSettings
from bus.wire import JsonEnvelopeFormat
from schemas.streams import dead_letters, replay_stream


class _MessageContext(Context):
    """FastStream's ``Context("message")``, resolved on the event loop.

    fast_depends runs a custom field's synchronous ``use`` in a worker thread: every
    handler taking ``RedisStreamMessage`` paid a thread hop per message (docs/performance.md).
    """

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Put the message being handled into the handler's arguments."""
        resolved: dict[str, Any] = super().use(**kwargs)
        return resolved


BusMessage = Annotated[RedisStreamMessage, _MessageContext("message")]
"""Annotate a handler parameter with this to receive the message being handled (its
envelope headers, reply_to, message id); use it instead of FastStream's ``RedisStreamMessage``."""

BusBatch = Annotated[RedisBatchStreamMessage, _MessageContext("message")]
"""The entries of one read of a command stream (``bus.batches``)."""


class _StreamSub(StreamSub[Any]):
    """FastStream's ``StreamSub``, not deep-copied to add an empty prefix.

    A subscriber reads its ``stream_sub`` through ``add_prefix(broker prefix)`` for every
    ``XREADGROUP`` and every message's log context, and ``add_prefix`` deep-copies the
    subscription each time: about 7% of a command handler's CPU at C=1
    (docs/performance.md). Our names carry their prefix already; the broker's is empty.
    """

    __slots__ = ()

    def add_prefix(self, prefix: str) -> Self:
        """This subscription itself when there is nothing to add; else FastStream's copy."""
        return self if not prefix else super().add_prefix(prefix)


REPLAY_PREFIX = "replay."
EVENTS_PREFIX = "events."


def producer_of_events(base: str) -> str:
    """The producer of stream ``base``'s events (``events.auth``, ``replay.<group>.events.auth``: auth)."""
    if base.startswith(REPLAY_PREFIX):
        base = base.removeprefix(REPLAY_PREFIX).partition(".")[2]
    return base.removeprefix(EVENTS_PREFIX).partition(".")[0]


def instance_id(service: str) -> str:
    """This process's name within its service's consumer group: service-host-pid."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}"


class BuswayBroker(RedisBroker):
    """FastStream's Redis broker, the connection its middleware answers commands on, and its readers."""

    def __init__(
        self,
        *args: Any,
        replies: RespConnection,
        batches: CommandBatches,
        bus_settings: BusSettings,
        service: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bus_settings = bus_settings
        self.service = service
        self.replies = replies
        self.batches = batches
        batches.context = self.context
        self._readers: list[ReadConnection] = []

    def reader(self, stream: str) -> ReadConnection:
        """A connection for the blocking reads of ``stream``'s subscriber (``bus.batches.read_on``), closed at stop.

        Between two reads the bus middleware answers and acks ``stream``'s entries on it
        (``BusMiddleware.readers``).
        """
        # Its stall timeout must outlast a read's BLOCK.
        connection = ReadConnection(
            self.bus_settings.redis_url,
            timeout=self.bus_settings.polling_interval_ms / 1000 + 5.0,
            client_name=f"{self.service}:read:{stream}:{os.getpid()}",
        )
        self._readers.append(connection)
        self.batches.middleware.readers[stream] = connection
        return connection

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        """Stop the subscribers (in-flight messages finish and are answered), then close.

        Commands being handled get what is left of the grace period, then are cancelled
        (left pending for another instance); no new one starts once the stop begins.
        """
        began = time.monotonic()
        self.batches.stop_starting()
        await super().stop(exc_type, exc_val, exc_tb)
        # Before the entries are released: a read that was under way returns nothing more.
        for reader in self._readers:
            await reader.stop()
        await self.batches.drain(max(0.0, self.batches.grace - (time.monotonic() - began)))
        await self.replies.stop()

    async def start(self) -> None:
        """Connect and start the subscribers."""
        self.batches.resume()
        await super().start()


def create_broker(
    settings: BusSettings,
    service: str,
    roles: StreamRoles | None = None,
    *,
    outage: Callable[[BaseException], bool] | None = None,
    metrics: HandlerMetrics | None = None,
) -> BuswayBroker:
    """A FastStream broker speaking busway's wire format, with busway's middleware.

    ``roles`` (a service's Consumer) says which streams carry commands (the middleware
    replies and acks them) and which carry secrets (deleted once handled). ``outage``
    recognises failures of the service's own store (see ``middleware_for``); ``metrics``
    counts every message handled. Everything it publishes is signed with ``service``'s
    key, and it handles a message on a stream of ``roles`` only from a producer allowed
    there, with a valid signature (docs/security.md).
    """
    # A subscriber of one's own may run in production without a key: it publishes nothing
    # anyone would accept then, but it need not sign to read (services require a key).
    keyless = settings.environment == "production" and settings.signing_key is None
    signer = None if keyless else settings.signer(service)
    message_format = type(f"{service.title()}EnvelopeFormat", (JsonEnvelopeFormat,), {"signer": signer})
    replies = RespConnection(settings.redis_url, client_name=f"{service}:replies:{os.getpid()}")
    middleware = middleware_for(
        service, roles, outage=outage, metrics=metrics, signer=signer, verifier=settings.verifier(), replies=replies
    )
    return BuswayBroker(
        settings.redis_url,
        bus_settings=settings,
        service=service,
        replies=replies,
        batches=CommandBatches(middleware, settings.max_workers, settings.shutdown_grace),
        message_format=message_format,
        middlewares=[middleware],
        logger=stdlib_logger(service),
        graceful_timeout=settings.shutdown_grace,
    )


def create_redis(settings: BusSettings, *, blocking: bool = False) -> "Redis":
    """A redis-py client for work beside FastStream (inbox, relay, heartbeats)."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=None if blocking else 5.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
    )


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _type_names(types: Collection[type[BaseModel]] | Collection[str] | None) -> Collection[str] | None:
    """The names of ``types``; a collection of names as it is (it may be a live one)."""
    if types is None:
        return None
    if all(isinstance(kind, str) for kind in types):
        return cast("Collection[str]", types)
    return frozenset(kind if isinstance(kind, str) else kind.__name__ for kind in types)


def _takes_the_message_alone(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` is ``async def handler(message: BusMessage)``: callable without FastStream."""
    parameters = list(inspect.signature(handler).parameters.values())
    if len(parameters) != 1 or parameters[0].kind is inspect.Parameter.KEYWORD_ONLY:
        return False
    return bool(get_type_hints(handler, include_extras=True).get(parameters[0].name) == BusMessage)


async def _mark_claimed(raw: Any, parse: Callable[[Any], Awaitable[StreamMessage[Any]]]) -> StreamMessage[Any]:
    """FastStream's parser, then a mark: this entry was reclaimed, not read for the first time."""
    message = await parse(raw)
    message.headers[CLAIMED] = "1"
    return message


@dataclass
class Consumer:
    """One service's consumer identity and the consumer groups it reads through."""

    settings: BusSettings
    service: str
    instance: str
    groups: list[tuple[str, str]] = field(default_factory=list)
    command_streams: set[str] = field(default_factory=set)
    event_streams: set[str] = field(default_factory=set)
    secret_streams: set[str] = field(default_factory=set)
    allowed: dict[str, frozenset[str]] = field(default_factory=dict)
    """Stream -> the producers whose messages on it are handled."""

    @property
    def max_deliveries(self) -> int:
        """Deliveries of an event before it moves to its dead-letter stream."""
        return self.settings.max_deliveries

    def command(
        self, broker: BuswayBroker, base: str, *, allow: Collection[str] = ("gateway",), secret: bool = False
    ) -> Callable[[Handler], Handler]:
        """Subscribe a command handler to ``base``: its return value is the reply.

        ``allow``: the services that may send it (their messages are signed); from any other
        sender the command is refused, logged and acked unhandled. Entries are read in
        batches and handled ``BUS_MAX_WORKERS`` at once (``bus.batches``); the bus
        middleware publishes each reply and acks its entry in one round trip (hence no
        FastStream reply and manual acks here); see ``stream`` for ``secret``.
        """
        stream = self.stream(base, secret=secret, batch=True)
        self.command_streams.add(stream.name)
        self.allowed[stream.name] = frozenset(allow)
        options: dict[str, Any] = {"no_reply": True, "ack_policy": AckPolicy.MANUAL}

        def register(handler: Handler) -> Handler:
            start = broker.batches.reader(handler)

            async def read_batch(batch: BusBatch) -> None:
                """What FastStream's pipeline would call with a batch; ``read_directly`` skips it."""
                await start(batch.raw_message, batch.consumer, batch.group)

            read_batch.__name__ = read_batch.__qualname__ = handler.__name__
            subscriber = broker.subscriber(stream=stream, **options)
            subscriber(read_batch)
            read_on(subscriber, broker.reader(stream.name))
            read_directly(subscriber, start)
            broker.subscriber(stream=self.claimer(stream), parser=_mark_claimed, **options)(handler)
            return handler

        return register

    def events(
        self,
        broker: RedisBroker,
        base: str,
        *,
        allow: Collection[str] | None = None,
        types: Collection[type[BaseModel]] | Collection[str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Subscribe an event handler to ``base``: one at a time, in stream order, acked on success.

        ``allow``: the services whose events are handled; default the producer the stream is
        named after (``events.auth``: auth). An event not signed by one of them is logged
        and acked unhandled. ``types``: the event types (classes, or their names) the handler
        handles, when not all: one of another type is acked as it is read, unread beyond
        its type and never handed to the handler (``bus.batches.read_events_directly``;
        a collection of names is read live, so it may grow).
        A failed event stays pending; the claimer hands it to the handler again after
        ``BUS_CLAIM_IDLE_MS``, until ``BUS_MAX_DELIVERIES`` sends it to ``dlq.<stream>``.

        The handler also reads ``replay.<group>.<base>``, with the same guarantees: what
        ``busway replay --to-group`` puts there reaches this group and no other.
        """
        producers = frozenset(allow if allow is not None else (producer_of_events(base),))
        streams = []
        for name in (base, replay_stream(self.service, base)):
            # One entry per read: events are handled one at a time anyway, and a prefetched
            # batch would age in memory until the claimer hands it out a second time.
            stream = self.stream(name, max_records=1)
            self.event_streams.add(stream.name)
            self.allowed[stream.name] = producers
            streams.append(stream)

        takes = _type_names(types)

        def register(handler: Handler) -> Handler:
            direct = _takes_the_message_alone(handler)
            for stream in streams:
                subscriber = broker.subscriber(stream=stream, no_reply=True)
                subscriber(handler)
                if isinstance(broker, BuswayBroker):  # not FastStream's own (its test broker, say)
                    read_on(subscriber, broker.reader(stream.name))
                    if direct:
                        read_events_directly(
                            subscriber, handler, broker.batches.middleware, broker.context, takes=takes
                        )
                broker.subscriber(stream=self.claimer(stream), no_reply=True, parser=_mark_claimed)(handler)
            return handler

        return register

    def claimer(self, stream: StreamSub[Any]) -> StreamSub[Any]:
        """A reader of ``stream``'s entries left pending too long.

        Those failed, or were read by a consumer that died or stopped before handling
        them. FastStream's ``min_idle_time`` subscribers only claim, never read new ones;
        this one looks every ``BUS_CLAIM_INTERVAL_MS``, not at the reads' (longer) block
        time, so what a stopping instance hands back (``release``) is taken in time.
        """
        return _StreamSub(
            stream.name,
            group=self.service,
            consumer=self.instance,
            min_idle_time=self.settings.claim_idle_ms,
            polling_interval=self.settings.claim_interval_ms,
        )

    def stream(
        self, base: str, *, secret: bool = False, max_records: int | None = None, batch: bool = False
    ) -> StreamSub:
        """Read ``base`` as a member of this service's group.

        ``secret``: the commands carry secrets (passwords); each entry is deleted from the
        stream as soon as it is handled, so no secret stays in Redis or its snapshots.
        """
        name = self.settings.name(base)
        self.groups.append((name, self.service))
        if secret:
            self.secret_streams.add(name)
        return _StreamSub(
            name,
            group=self.service,
            consumer=self.instance,
            max_records=max_records or self.settings.max_records,
            batch=batch,
            polling_interval=self.settings.polling_interval_ms,
        )

    def allowed_producers(self, stream: str) -> frozenset[str] | None:
        """The producers whose messages on ``stream`` are handled.

        A replay stream (``replay.<group>.<stream>``) carries entries of ``stream`` with
        their original envelopes and signatures: it allows what ``stream`` allows.
        """
        allowed = self.allowed.get(stream)
        if allowed is not None:
            return allowed
        base = stream.removeprefix(self.settings.prefix)
        if base.startswith(REPLAY_PREFIX):
            original = base.removeprefix(REPLAY_PREFIX).partition(".")[2]
            return self.allowed.get(self.settings.name(original)) or self.allowed.get(original)
        return None

    def dead_letter_stream(self, stream: str) -> str:
        """``dlq.<stream>``, under this deployment's prefix."""
        return self.settings.name(dead_letters(stream.removeprefix(self.settings.prefix)))

    async def release(self, redis: "Redis") -> int:
        """Hand this consumer's pending entries to the others at once; how many.

        Called on a graceful stop, after the last handler finished: entries read but not
        started would otherwise wait BUS_CLAIM_IDLE_MS for a claimer (and a command's
        deadline would pass). Marking them idle that long lets the next claim take them.
        """
        released = 0
        for stream, group in self.groups:
            entries = await redis.xpending_range(
                stream, group, min="-", max="+", count=10_000, consumername=self.instance
            )
            ids: list[Any] = [entry["message_id"] for entry in entries]
            if ids:
                await redis.xclaim(
                    stream,
                    group,
                    self.instance,
                    min_idle_time=0,
                    message_ids=ids,
                    idle=self.settings.claim_idle_ms,
                    justid=True,
                )
                released += len(ids)
        return released

    async def ensure_groups(self, redis: "Redis") -> None:
        """Create the groups at the stream's start, so nothing published earlier is missed.

        FastStream creates a missing group at ``$``: entries written before the service
        first started would never reach it (a saga step lost). Creating it here at ``0``
        first makes FastStream find it and read from where the group stands.
        """
        for stream, group in self.groups:
            try:
                await redis.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
