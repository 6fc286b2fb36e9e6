"""Request-reply over the bus with one long-lived inbox per process.

The requester publishes a command with ``reply_to`` = its inbox (a Pub/Sub channel it
subscribed to once) and awaits a future keyed by the command's message id. A handler's
reply names that id as its ``causation_id``; a typed error reply is raised here as
:class:`schemas.errors.ReplyError` at once, never as a timeout.
"""

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from loguru import logger
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus import wire
from bus.correlation import current_correlation_id, new_id
from bus.pipelining import Autopipeline
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


def outcome_key(message_id: str) -> str:
    """The reply key of the follow-up that reports how the work begun by ``message_id`` ended."""
    return f"{message_id}/outcome"


class BusClient:
    """Sends commands and waits for their replies on this process's inbox."""

    def __init__(
        self, redis: Redis, settings: BusSettings, instance: str, *, producer: str, inbox_redis: Redis | None = None
    ) -> None:
        """Publish with ``redis``; hold the inbox subscription on ``inbox_redis``.

        ``redis`` must have socket timeouts; the subscription blocks, so ``inbox_redis``
        (default: ``redis``) should have none.
        """
        self._inbox_redis = inbox_redis or redis
        self._pipeline = Autopipeline(redis)
        self._producer = producer
        self._settings = settings
        self._signer = settings.signer(producer)
        self._verifier = settings.verifier()
        self.inbox = settings.name(f"{INBOX_PREFIX}{instance}")
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._producers: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe to the inbox; returns once replies can arrive."""
        self._reader = asyncio.create_task(self._read(), name=f"inbox {self.inbox}")
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def stop(self) -> None:
        """Stop reading; requests still waiting fail as unavailable."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        self._producers.clear()

    async def _read(self) -> None:
        while True:
            pubsub = self._inbox_redis.pubsub()
            try:
                await pubsub.subscribe(self.inbox)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._deliver(message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("inbox connection lost, resubscribing: {}", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

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
        FastStream's publish pipeline (the handlers' subscribers read it all the same).
        """
        message_id = message_id or new_id()
        now = time.time()
        envelope = {
            MESSAGE_ID: message_id,
            TYPE: type(command).__name__,
            OCCURRED_AT: datetime.fromtimestamp(now, UTC).isoformat(),
            CORRELATION_ID: current_correlation_id() or new_id(),
            PRODUCER: self._producer,
            REPLY_TO: self.inbox,
            DEADLINE: str(int((now + (timeout or self._settings.request_timeout)) * 1000)),
            **(headers or {}),
        }
        entry = wire.encode(envelope, command.__pydantic_serializer__.to_json(command), signer=self._signer)
        name, maxlen = self._settings.name(stream), self._settings.command_stream_maxlen

        def queue(pipe: Pipeline) -> None:
            pipe.xadd(name, {wire.DATA_FIELD: entry}, maxlen=maxlen, approximate=True)

        try:
            async with asyncio.timeout(timeout or self._settings.request_timeout):
                [result] = await self._pipeline.execute(queue)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            logger.warning("cannot publish to {}: {!r}", stream, exc)
            raise ReplyError("The message bus is unreachable.", code=ErrorCode.UNAVAILABLE) from None
        if isinstance(result, Exception):
            # Redis refused the write (out of memory, read-only replica): not the caller's fault.
            logger.warning("Redis refused a command for {}: {!r}", stream, result)
            raise ReplyError("The message bus refused the message.", code=ErrorCode.UNAVAILABLE)
        return message_id

    async def request(
        self,
        stream: str,
        command: BaseModel,
        result: type[ResultT],
        *,
        timeout: float | None = None,
    ) -> ResultT:
        """Send ``command`` and return its typed result; raise ReplyError on an error reply."""
        timeout = timeout or self._settings.request_timeout
        message_id = new_id()
        # Commands go to <service>.<command>: only <service> may answer.
        future = self.expect(message_id, producer=stream.partition(".")[0])
        try:
            await self.send(stream, command, timeout=timeout, message_id=message_id)
            return await self.wait(future, result, timeout=timeout, what=stream)
        finally:
            self.forget(message_id)

    @staticmethod
    async def wait(future: "asyncio.Future[Reply]", result: type[ResultT], *, timeout: float, what: str) -> ResultT:
        """Await a reply future and decode it as ``result`` (or raise its error)."""
        try:
            async with asyncio.timeout(timeout):
                payload, headers = await future
        except TimeoutError:
            raise ReplyError(f"No reply to {what} within {timeout:g}s.", code=ErrorCode.UNAVAILABLE) from None
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
