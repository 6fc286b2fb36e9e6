"""Command streams read in batches: one XREADGROUP per batch, and no FastStream pipeline run for it.

FastStream's per-message path (a task, a semaphore, a logging scope, dependency
injection and a parse per entry) cost a users handler about 150 µs of CPU per command
(docs/performance.md). A command subscriber here is a FastStream batch subscriber instead,
whose reads go straight to this module (``read_directly``): each read brings up to
``BUS_MAX_RECORDS`` entries, and each entry becomes a task of its
own running the bus middleware (:meth:`bus.middleware.BusMiddleware.handle`: signature,
deadline, error replies, logs, metrics, reply and ack) around the handler, at most
``BUS_MAX_WORKERS`` at once per command stream. The replies and acks of the tasks that
finish in one event-loop turn leave in one write.

The reading does not wait for a batch to finish, only for a free slot: a slow command
does not hold up the ones read after it. Once a stop begins no entry starts; the running
ones get what is left of ``BUS_SHUTDOWN_GRACE`` and are then cancelled
(:meth:`CommandBatches.drain`). An entry read but not answered stays pending:
``Consumer.release`` hands it to the other instances, or the claimer (a per-message
FastStream subscriber) hands it out again.

A handler takes the command (a pydantic model) and, optionally, the message
(``bus.broker.BusMessage``)::

    async def login(cmd: LogIn, message: BusMessage) -> TokenPair: ...
"""

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from typing import Any, get_type_hints

from faststream import ContextRepo
from faststream.redis.message import RedisStreamMessage
from loguru import logger
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError

from bus import wire
from bus.middleware import BusMiddleware, entry_key
from bus.resp import ReadConnection

Call = Callable[[RedisStreamMessage], Awaitable[Any]]

_DATA_KEY = wire.DATA_FIELD.encode()


def calling(handler: Callable[..., Awaitable[Any]]) -> Call:
    """How to call ``handler`` with one entry: its command validated from the body, and the message.

    Raises ``TypeError`` at registration for a handler whose first parameter is not a
    pydantic model, or that takes more than the command and the message.
    """
    parameters = list(inspect.signature(handler).parameters.values())
    hints = get_type_hints(handler)
    model = hints.get(parameters[0].name) if parameters else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or len(parameters) > 2:
        msg = f"a command handler takes (command: <pydantic model>[, message: BusMessage]); {handler.__name__} does not"
        raise TypeError(msg)
    validate = model.model_validate_json
    if len(parameters) == 1:

        async def command_only(message: RedisStreamMessage) -> Any:
            return await handler(validate(message.body))

        return command_only

    async def with_message(message: RedisStreamMessage) -> Any:
        return await handler(validate(message.body), message)

    return with_message


def _message(
    channel: str, entry_id: bytes, fields: dict[bytes, Any], consumer: Any, group: str | None
) -> RedisStreamMessage:
    """One stream entry as the message a per-entry FastStream subscriber would have got."""
    body, headers = wire.decode(fields.get(_DATA_KEY, b""))
    message_id = headers.get("message_id") or entry_id.decode()
    return RedisStreamMessage(
        raw_message={"type": "stream", "channel": channel, "message_ids": [entry_id], "data": fields},
        body=body,
        headers=headers,
        reply_to=headers.get("reply_to", ""),
        content_type=headers.get("content-type"),
        correlation_id=headers.get("correlation_id") or message_id,
        message_id=message_id,
        consumer=consumer,
        group=group,
    )


Batch = Callable[[Any, Any, str | None], Awaitable[None]]
"""What starts the entries of one read: (FastStream's raw batch, the Redis client, the group)."""


def entries(raw: Any, consumer: Any, group: str | None) -> list[RedisStreamMessage]:
    """The entries of a raw batch as the messages a per-entry subscriber would have got."""
    return [
        _message(raw["channel"], entry_id, fields, consumer, group)
        for entry_id, fields in zip(raw["message_ids"], raw["data"], strict=True)
    ]


def read_on(subscriber: Any, connection: ReadConnection) -> None:
    """Make FastStream's ``subscriber`` read new entries with ``XREADGROUP`` on ``connection``.

    FastStream still runs the reading loop (its start, its stop, its error handling: a
    lost group stops the subscriber, and ``bus.runtime`` recreates the group and starts it
    again); only the read goes on ``connection``, a ``bus.resp`` connection of the
    subscriber's own, instead of redis-py: a pool checkout, retry wrappers and redis-py's
    parsing per read, a fifth of a users handler's CPU at C=1, where every read brings one
    command (docs/performance.md). It replaces the subscriber's ``_xreadgroup``, which
    FastStream 0.7's stream subscribers call for each read (re-check it when FastStream
    moves); the claimers keep redis-py.

    Between two reads ``connection.between_reads`` is set: the replies and acks of the
    entries read go on it then (``BusMiddleware.answers``), in the next read's write.
    """
    stream = subscriber.stream_sub
    stream_name = stream.name.encode()

    async def xreadgroup(*, count: int | None, block: int | None, noack: bool = False) -> Any:
        command: list[str | int] = ["XREADGROUP", "GROUP", stream.group, stream.consumer]
        if count:
            command += ["COUNT", count]
        if block is not None:
            command += ["BLOCK", block]
        if noack:
            command.append("NOACK")
        connection.between_reads = False
        read = (*command, "STREAMS", stream.name, ">")
        (reply,) = await connection.execute(read)
        if connection.out_of_step(reply):
            # Once more, on a new connection (which asks Redis about CLIENT REPLY again),
            # rather than through FastStream's error path and its 5 s pause.
            (reply,) = await connection.execute(read)
            if connection.out_of_step(reply):
                raise RedisConnectionError("the replies on a read connection are out of step")
        # Answered: nothing waits on the connection now. (A read that failed or was
        # cancelled may still be blocked in Redis: the connection stays out of use.)
        connection.between_reads = True
        if isinstance(reply, Exception):  # NOGROUP among them: FastStream's loop acts on it
            raise reply
        if not reply:  # nothing within the block time
            return ()
        # RESP2's [[name, [[id, [field, value, ...]], ...]]], as redis-py would give it.
        ((_, entries),) = reply
        return [(stream_name, [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in entries])]

    subscriber._xreadgroup = xreadgroup


def read_directly(subscriber: Any, start: Batch) -> None:
    """Hand each batch FastStream's ``subscriber`` reads straight to ``start``.

    What is skipped is FastStream's per-message pipeline run once per batch (context
    scopes, its middlewares, parser, decoder, dependency injection), about a third of a
    command handler's CPU when every batch holds one command (C=1; docs/performance.md).
    Nothing in it does anything for a batch: the bus middleware runs around every entry, a
    command's ack is the middleware's, and in-flight entries are ``CommandBatches``' to
    drain. It replaces the subscriber's ``consume_one``, which FastStream 0.7's stream
    subscribers call with each read.
    """
    group = subscriber.stream_sub.group

    async def consume_one(raw: Any) -> None:
        if not subscriber.running:
            return
        try:
            await start(raw, subscriber._client, group)
        except Exception:
            # As FastStream does: a failure here must not end the subscriber's reading loop.
            logger.exception("a batch of {} could not be started", raw.get("channel"))
        # One loop turn for the entries just started before the next read is sent: those
        # whose handler does not wait answer now, on the reader's connection, and their
        # replies and acks leave in one write with that read.
        await asyncio.sleep(0)

    subscriber.consume_one = consume_one


def read_events_directly(
    subscriber: Any,
    handler: Call,
    middleware: type[BusMiddleware],
    context: ContextRepo,
    *,
    takes: Collection[str] | None = None,
) -> None:
    """Run each event FastStream's ``subscriber`` reads through the bus middleware and ``handler``.

    FastStream still reads the stream, one entry at a time and in order, and waits for
    each event before it reads the next; what is skipped is its per-message pipeline,
    and its ack through redis-py: the ack goes on the reader's own connection, with the
    next read (``BusMiddleware.answers``).
    ``takes``: the event types ``handler`` handles (a live collection: checked per entry).
    An entry of another type is acked as it is read, with its envelope's ``type`` the only
    field decoded: no signature check, no middleware, no handler. users reads every login's
    ``UserLoggedIn`` on events.auth and handles none of them; each cost it about twice the
    CPU through the middleware (docs/performance.md). An entry whose type cannot be read
    takes the whole path, and is refused or dead-lettered there.
    The outcomes are the pipeline's: a handled, refused or dead-lettered event is acked; a
    failed one stays pending for the claimer (the middleware has recorded why); a claimed
    one still handled here is left alone.
    FastStream's graceful stop still waits for the event being handled (its subscriber
    lock). The claimers keep FastStream's pipeline: they run rarely.
    """
    group = subscriber.stream_sub.group

    def ack(channel: str, entry_id: bytes, message_id: str | None) -> None:
        # The ack goes out with the next read, on the reader's connection (idle now),
        # without a reply to wait for; else not awaited, and a failure logged when Redis answers.
        xack = ("XACK", channel, group, entry_id)
        connection = middleware.answers(channel)
        if not (isinstance(connection, ReadConnection) and connection.send_without_replies(xack)):
            connection.submit(xack).add_done_callback(partial(_acked, message_id or entry_id.decode(), channel))

    async def consume_one(raw: Any) -> None:
        if not subscriber.running:
            return
        channel, entry_id = raw["channel"], raw["message_ids"][0]
        if takes is not None and middleware.replies is not None:
            kind = wire.type_of(raw["data"].get(_DATA_KEY, b""))
            if kind is not None and kind not in takes:
                logger.debug("skipped {} {} of {}: no handler for the type", kind, entry_id.decode(), channel)
                if middleware.metrics is not None:
                    middleware.metrics.skipped(channel)
                ack(channel, entry_id, None)
                return
        message = _message(channel, entry_id, raw["data"], subscriber._client, group)
        with subscriber.lock:
            try:
                await middleware(message, context=context).handle(message, handler)
            except Exception as exc:
                # Left pending for the claimer; the middleware recorded why (and logged a
                # handler's traceback). One line here, as FastStream's pipeline logged each.
                logger.warning("event {} of {} failed, to be tried again: {!r}", message.message_id, channel, exc)
                return
            if message.committed:  # left to another delivery: not ours to ack
                return
            if middleware.replies is None:  # not on a bus broker's connection (FastStream's test broker)
                await message.ack()
                return
            ack(channel, entry_id, message.message_id)

    subscriber.consume_one = consume_one


def _acked(message_id: str, channel: str, acked: "asyncio.Future[list[Any]]") -> None:
    """An event's XACK was answered: a failure leaves it pending, handled again later."""
    if acked.cancelled():
        return
    error = acked.exception()
    result = error if error is not None else acked.result()[0]
    if isinstance(result, BaseException):
        # Pending still: handled again later, and the service's inbox skips it then.
        logger.warning("event {} of {} handled but not acked: {!r}", message_id, channel, result)


class CommandBatches:
    """Runs the entries of command batches as tasks: at most ``limit`` at once per command stream."""

    def __init__(self, middleware: type[BusMiddleware], limit: int, grace: float) -> None:
        """``limit``: entries of one stream handled at once; ``grace``: seconds a stop waits for them."""
        self.middleware = middleware
        self._limit = limit
        self.grace = grace
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.context = ContextRepo()
        """FastStream's context of the broker the batches come from (``BuswayBroker`` sets it)."""

    def reader(self, handler: Callable[..., Awaitable[Any]]) -> Batch:
        """What a batch subscriber does with each batch: a task per entry, each calling ``handler``.

        It returns once the last entry has a slot, so the next read waits for free slots
        but never for a slow entry. Once stopping, it starts nothing more: the entries
        left stay pending, for the claimers (``Consumer.release`` hands them out at once).
        """
        call = calling(handler)
        slots: asyncio.Semaphore | None = None

        async def start(raw: Any, consumer: Any, group: str | None) -> None:
            nonlocal slots
            if slots is None:  # made on the event loop that runs the subscriber
                slots = asyncio.Semaphore(self._limit)
            messages = entries(raw, consumer, group)
            # In hand from now on: a claimer must not hand out an entry waiting for a slot.
            waiting = {key for message in messages if (key := entry_key(message.raw_message)) is not None}
            in_hand = self.middleware.in_hand
            in_hand.update(waiting)
            try:
                for message in messages:
                    if not await self._slot(slots):
                        return
                    waiting.discard(entry_key(message.raw_message))
                    task = asyncio.create_task(self._run(message, call, slots))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            finally:
                # Not started (a stop began, or the read was cancelled): pending, for the claimers.
                in_hand.difference_update(waiting)

        return start

    async def _slot(self, slots: asyncio.Semaphore) -> bool:
        """Take a slot; False (and no slot) once stopping."""
        if self._stopping.is_set():
            return False
        if not slots.locked():
            await slots.acquire()  # free: does not wait
            return True
        acquire = asyncio.ensure_future(slots.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((acquire, stopping), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled (the subscriber stops): a slot taken at that moment goes back.
            if acquire.done() and not acquire.cancelled():
                slots.release()
            raise
        finally:
            stopping.cancel()
            if not acquire.done():
                acquire.cancel()
        if acquire.cancelled():
            return False
        if self._stopping.is_set():
            slots.release()
            return False
        return True

    async def _run(self, message: RedisStreamMessage, call: Call, slots: asyncio.Semaphore) -> None:
        try:
            await self.middleware(message, context=self.context).handle(message, call)
        except Exception:
            # Its reply and ack did not go out (Redis unreachable): it stays pending, and
            # the claimer hands it out again.
            logger.exception("command {} could not be answered", message.message_id)
        finally:
            slots.release()

    def stop_starting(self) -> None:
        """Start no more entries (a stop begins)."""
        self._stopping.set()

    def resume(self) -> None:
        """Start entries again (the broker starts)."""
        self._stopping.clear()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the entries being handled, then cancel the rest.

        A cancelled entry stays pending: another instance handles it, and this one must
        not still be running it then.
        """
        self.stop_starting()
        if not self._running:
            return
        _, late = await asyncio.wait(set(self._running), timeout=timeout)
        if late:
            logger.warning("{} commands still running after the grace period: cancelled", len(late))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
