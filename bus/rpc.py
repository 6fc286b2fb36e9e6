"""Request-reply over the bus with one long-lived inbox per process.

The requester publishes a command with ``reply_to`` = its inbox (a Pub/Sub channel it
subscribed to once) and awaits a future keyed by the command's message id. A handler's
reply names that id as its ``causation_id``; a typed error reply is raised here as
:class:`schemas.errors.ReplyError` at once, never as a timeout.
"""

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from loguru import logger
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus import wire
from bus.correlation import current_correlation_id, new_id
from bus.resp import RespConnection, RespSubscription
from bus.settings import BusSettings
from bus.signing import wire_payload
from schemas import envelope
from schemas.envelope import (
    CAUSATION_ID,
    CORRELATION_ID,
    DEADLINE,
    ERROR_TYPE,
    MESSAGE_ID,
    OCCURRED_AT,
    PRODUCER,
    REPLY_TO,
    TYPE,
)
from schemas.errors import ErrorCode, ErrorReply, ReplyError
from schemas.streams import INBOX_PREFIX

ResultT = TypeVar("ResultT", bound=BaseModel)

REPLY_KEY = envelope.REPLY_KEY
"""Header naming the future a message answers, when that is not its causation id."""

Reply = tuple[bytes, dict[str, Any]]


def _publish_problem(stream: str, error: BaseException | None, result: Any) -> BaseException | None:
    """What the outcome of an XADD means for its caller: None when Redis took it.

    ``error``: what sending raised; ``result``: Redis's reply otherwise.
    """
    if error is None:
        if not isinstance(result, Exception):
            return None
        # Redis refused the write (out of memory, read-only replica): not the caller's fault.
        logger.warning("Redis refused a command for {}: {!r}", stream, result)
        return ReplyError("The message bus refused the message.", code=ErrorCode.UNAVAILABLE)
    if isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError)):
        logger.warning("cannot publish to {}: {!r}", stream, error)
        return ReplyError("The message bus is unreachable.", code=ErrorCode.UNAVAILABLE)
    return error


def outcome_key(message_id: str) -> str:
    """The reply key of the follow-up that reports how the work begun by ``message_id`` ended."""
    return f"{message_id}/outcome"


class BusClient:
    """Sends commands and waits for their replies on this process's inbox."""

    def __init__(self, settings: BusSettings, instance: str, *, producer: str) -> None:
        """Requests signed as ``producer``; replies to the inbox of ``instance``.

        Commands go out on :attr:`connection` (pipelined, see ``bus/resp.py``), which the
        process may share for other hot-path commands; replies arrive on a subscription
        of their own.
        """
        self.connection = RespConnection(settings.redis_url, client_name=f"{producer}:{instance}")
        self._producer = producer
        self._settings = settings
        self._signer = settings.signer(producer)
        self._verifier = settings.verifier()
        self.inbox = settings.name(f"{INBOX_PREFIX}{instance}")
        self._subscription = RespSubscription(
            settings.redis_url,
            self.inbox,
            self._deliver,
            name=f"inbox {self.inbox}",
            client_name=f"{producer}:{instance}:inbox",
        )
        self._subscription.on_loss = self._lost
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._producers: dict[str, str] = {}
        self._deadlines: dict[asyncio.Future[Reply], float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._next_sweep = math.inf
        self._sooner: asyncio.Event | None = None

    async def start(self) -> None:
        """Subscribe to the inbox; returns once replies can arrive."""
        await self._subscription.start()

    async def stop(self) -> None:
        """Stop reading; requests still waiting fail as unavailable."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self._subscription.stop()
        await self.connection.stop()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        self._producers.clear()

    def _lost(self, exc: Exception) -> None:
        logger.warning("inbox connection lost, resubscribing: {}", exc)

    def _deliver(self, data: bytes) -> None:
        payload, headers = wire.decode(data)
        problem = self._verifier.verify(headers, wire_payload(payload, headers))
        if problem is not None:
            # Anyone who can PUBLISH to the inbox could answer in a service's name: only a
            # reply signed by its producer's key resolves a request.
            logger.warning(
                "ignored a reply on {} ({}) from producer {!r}, message id {}",
                self.inbox,
                problem,
                headers.get(PRODUCER),
                headers.get(MESSAGE_ID),
            )
            return
        key = headers.get(REPLY_KEY) or headers.get(CAUSATION_ID)
        future = self._pending.get(key) if key else None
        if future is None or future.done():
            logger.debug("reply nobody waits for: {}", key)
            return
        expected = self._producers.get(key) if key else None
        if expected is not None and headers.get(PRODUCER) != expected:
            # Validly signed, by the wrong service: another service may not answer for this one.
            logger.warning(
                "ignored a reply from {!r} to a request to {}, message id {}",
                headers.get(PRODUCER),
                expected,
                headers.get(MESSAGE_ID),
            )
            return
        future.set_result((payload, headers))

    def expect(self, key: str, producer: str | None = None) -> "asyncio.Future[Reply]":
        """A future for the message whose reply key is ``key``; drop it with :meth:`forget`.

        ``producer``: only a reply from that service resolves it (``request`` passes the
        service that owns the command stream).
        """
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        if producer is not None:
            self._producers[key] = producer
        return future

    def forget(self, key: str) -> None:
        """Stop waiting for ``key``."""
        self._pending.pop(key, None)
        self._producers.pop(key, None)

    async def send(
        self,
        stream: str,
        command: BaseModel,
        *,
        timeout: float | None = None,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Publish ``command`` on ``stream`` with this inbox as ``reply_to``; its message id.

        One XADD of the finished envelope: the hot path of every request, so it skips
        FastStream's publish pipeline (the handlers' subscribers read it all the same);
        the XADDs of one event-loop turn leave in one write.
        """
        timeout = timeout or self._settings.request_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._publish(stream, command, timeout, message_id, headers)
        except TimeoutError:
            logger.warning("cannot publish to {}: no answer from Redis within {:g}s", stream, timeout)
            raise ReplyError("The message bus is unreachable.", code=ErrorCode.UNAVAILABLE) from None

    async def _publish(
        self, stream: str, command: BaseModel, timeout: float, message_id: str | None, headers: dict[str, str] | None
    ) -> str:
        """The XADD of ``send``, bounded by the caller's timeout."""
        message_id = message_id or new_id()
        error: BaseException | None = None
        result: Any = None
        try:
            [result] = await self.connection.execute(self._xadd(stream, command, timeout, message_id, headers))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            error = exc
        problem = _publish_problem(stream, error, result)
        if problem is not None:
            raise problem from None
        return message_id

    def _xadd(
        self, stream: str, command: BaseModel, timeout: float, message_id: str, headers: dict[str, str] | None
    ) -> tuple[str | bytes | int, ...]:
        """The XADD of ``command``'s signed envelope, with this inbox as ``reply_to``."""
        now = time.time()
        envelope = {
            MESSAGE_ID: message_id,
            TYPE: type(command).__name__,
            OCCURRED_AT: datetime.fromtimestamp(now, UTC).isoformat(),
            CORRELATION_ID: current_correlation_id() or new_id(),
            PRODUCER: self._producer,
            REPLY_TO: self.inbox,
            DEADLINE: str(int((now + timeout) * 1000)),
            **(headers or {}),
        }
        entry = wire.encode(envelope, command.__pydantic_serializer__.to_json(command), signer=self._signer)
        stream_key = self._settings.name(stream)
        return ("XADD", stream_key, "MAXLEN", "~", self._settings.command_stream_maxlen, "*", wire.DATA_FIELD, entry)

    async def request(
        self,
        stream: str,
        command: BaseModel,
        result: type[ResultT],
        *,
        timeout: float | None = None,
    ) -> ResultT:
        """Send ``command`` and return its typed result; raise ReplyError on an error reply.

        The XADD is queued, not awaited: a failure to publish fails the request through
        ``_sent``; the deadline covers both (``_expire_at``).
        """
        timeout = timeout or self._settings.request_timeout
        message_id = new_id()
        # Commands go to <service>.<command>: only <service> may answer.
        future = self.expect(message_id, producer=stream.partition(".")[0])
        self._expire_at(future, timeout)
        try:
            sent = self.connection.submit(self._xadd(stream, command, timeout, message_id, None))
            sent.add_done_callback(partial(self._sent, future, stream))
            payload, headers = await future
        except TimeoutError:
            raise ReplyError(f"No reply to {stream} within {timeout:g}s.", code=ErrorCode.UNAVAILABLE) from None
        finally:
            self._deadlines.pop(future, None)
            self.forget(message_id)
        return self.decode(payload, headers, result, what=stream)

    def _sent(self, future: "asyncio.Future[Reply]", stream: str, sent: "asyncio.Future[list[Any]]") -> None:
        """A request's XADD was answered: a failure to publish fails the request at once."""
        if sent.cancelled():
            return
        error = sent.exception()
        problem = _publish_problem(stream, error, None if error is not None else sent.result()[0])
        if problem is not None and not future.done():
            future.set_exception(problem)

    def _expire_at(self, future: "asyncio.Future[Reply]", timeout: float) -> None:
        """Fail ``future`` with TimeoutError once ``timeout`` seconds have passed.

        One sweeper task for all requests rather than an asyncio timer each (a timer cost
        the gateway about 20 µs of CPU per request, docs/performance.md); it sleeps until
        the earliest deadline, and is woken only by a request due sooner than that.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._deadlines[future] = deadline
        if self._sweeper is None or self._sweeper.done():
            self._next_sweep = deadline
            self._sooner = asyncio.Event()  # of the loop the sweeper runs on
            self._sweeper = loop.create_task(self._sweep(self._sooner), name=f"deadlines {self.inbox}")
        elif deadline < self._next_sweep and self._sooner is not None:
            self._next_sweep = deadline
            self._sooner.set()

    async def _sweep(self, sooner: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while self._deadlines:
            sooner.clear()
            wait = self._next_sweep - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await sooner.wait()
                if sooner.is_set():
                    continue  # a request due sooner came in: sleep until its deadline instead
            now = loop.time()
            for future, deadline in list(self._deadlines.items()):
                if deadline <= now:
                    del self._deadlines[future]
                    if not future.done():
                        future.set_exception(TimeoutError())
            # Those answered since are gone from the map: the next one due is among the rest.
            self._next_sweep = min(self._deadlines.values(), default=math.inf)

    @staticmethod
    async def wait(future: "asyncio.Future[Reply]", result: type[ResultT], *, timeout: float, what: str) -> ResultT:
        """Await a reply future and decode it as ``result`` (or raise its error)."""
        try:
            async with asyncio.timeout(timeout):
                payload, headers = await future
        except TimeoutError:
            raise ReplyError(f"No reply to {what} within {timeout:g}s.", code=ErrorCode.UNAVAILABLE) from None
        return BusClient.decode(payload, headers, result, what=what)

    @staticmethod
    def decode(payload: bytes, headers: dict[str, Any], result: type[ResultT], *, what: str) -> ResultT:
        """A reply as ``result``, or its error raised as ReplyError."""
        try:
            if headers.get(TYPE) == ERROR_TYPE:
                error = ErrorReply.model_validate_json(payload)
            else:
                return result.model_validate_json(payload)
        except ValidationError:
            # A reply that breaks its contract is the service's fault, not the caller's.
            logger.error("malformed reply to {} (type {})", what, headers.get(TYPE))
            raise ReplyError(f"The reply to {what} was malformed.", code=ErrorCode.INTERNAL) from None
        raise ReplyError.from_reply(error)
