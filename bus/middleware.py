"""FastStream middleware: envelope headers, correlation, deadlines, error replies, logs.

One middleware does all of it so each message pays for one wrapper, not five.
"""

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import msgspec
from faststream import BaseMiddleware, Response
from faststream.message import StreamMessage
from faststream.response import PublishCommand
from loguru import logger
from pydantic import BaseModel, ValidationError

from bus import wire
from bus.correlation import correlated, current_correlation_id, new_id
from bus.metrics import HandlerMetrics
from bus.resp import ReadConnection, RespConnection
from bus.signing import Signer, Verifier, wire_payload
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
from schemas.errors import ErrorCode, ErrorDetail, ErrorReply, ReplyError

_json = msgspec.json.Encoder()

BATCH = "bstream"
"""FastStream's ``raw_message["type"]`` of a batch read from a stream."""

CLAIMED = "x-busway-claimed"
"""Set (in-process only) on entries a claimer handed out again: only those may be dead letters."""

FAILURES_SUFFIX = ":failures"
"""Hash beside a stream: entry id -> the latest error of that entry's handler."""

OUTAGE_MARK = b"[outage] "
"""Prefix of a recorded failure caused by an unavailable store: such an event is never dead-lettered."""


class StreamRoles(Protocol):
    """What a service's streams are: commands, events, secrets; and where dead letters go."""

    @property
    def command_streams(self) -> Collection[str]:
        """Streams whose entries the middleware replies to and acks itself."""
        ...

    @property
    def secret_streams(self) -> Collection[str]:
        """Streams whose entries are deleted once handled."""
        ...

    @property
    def event_streams(self) -> Collection[str]:
        """Streams whose failed entries are retried, then dead-lettered."""
        ...

    @property
    def max_deliveries(self) -> int:
        """Deliveries of an event before its dead letter."""
        ...

    def dead_letter_stream(self, stream: str) -> str:
        """Where the entries of ``stream`` that keep failing go."""
        ...

    def allowed_producers(self, stream: str) -> Collection[str] | None:
        """The services whose messages on ``stream`` are handled; None: not a stream of this service."""
        ...


_consumed_id: ContextVar[str | None] = ContextVar("busway_consumed_message_id", default=None)


class InvalidMessage(Exception):
    """An event that does not match its contract (the message says which fields)."""


def error_response(error: ErrorReply) -> Response:
    """A reply carrying ``error`` instead of a result."""
    return Response(error, headers={TYPE: ERROR_TYPE})


def validation_error_reply(exc: ValidationError) -> ErrorReply:
    """The typed error for a payload that failed its contract."""
    details = tuple(ErrorDetail(loc=tuple(err["loc"]), msg=err["msg"], type=err["type"]) for err in exc.errors())
    return ErrorReply(
        code=ErrorCode.INVALID_PAYLOAD, message="The message does not match its contract.", details=details
    )


def entry_key(raw: Any) -> tuple[str, Any] | None:
    """(stream, entry id) of a message read from a stream, or None for one that was not."""
    if isinstance(raw, dict) and raw.get("message_ids"):
        return raw.get("channel", ""), raw["message_ids"][0]
    return None


def deadline_passed(headers: dict[str, Any], now_ms: float | None = None) -> bool:
    """Whether the command's ``deadline`` header (Unix ms) is in the past."""
    raw = headers.get(DEADLINE)
    if raw is None:
        return False
    try:
        deadline = int(raw)
    except ValueError:
        return False
    return (now_ms if now_ms is not None else time.time() * 1000) > deadline


def refusal(verifier: Verifier, allowed: Collection[str], headers: dict[str, Any], body: bytes) -> str | None:
    """Why a message must not be handled (``unauthenticated: ...``/``forbidden``), or None.

    Its signature must be its producer's, and its producer one of ``allowed``.
    """
    problem = verifier.verify(headers, wire_payload(body, headers))
    if problem is not None:
        return f"unauthenticated: {problem}"
    if headers.get(PRODUCER) not in allowed:
        return "forbidden"
    return None


class BusMiddleware(BaseMiddleware):
    """Every message in and out of a busway process goes through this."""

    service: ClassVar[str] = "unknown"
    roles: ClassVar[StreamRoles | None] = None
    metrics: ClassVar[HandlerMetrics | None] = None
    signer: ClassVar[Signer | None] = None
    verifier: ClassVar[Verifier | None] = None
    replies: ClassVar[RespConnection | None] = None
    """Where command replies and acks go (one write per loop turn)."""
    readers: ClassVar[dict[str, ReadConnection]] = {}
    """Stream -> the connection its subscriber reads on: between two reads, that stream's
    replies and acks go there instead, in the same write as the next read (``answers``)."""
    in_hand: ClassVar[set[tuple[str, Any]]] = set()
    """(stream, entry id) of the entries this process is handling now (or, for a command
    batch, has read and will start); one set per service (``middleware_for``)."""
    skipped_claims: ClassVar[Counter[tuple[str, Any]]] = Counter()
    """Claims of an entry left to the delivery still handling it: Redis counted each as a
    delivery, but the entry was not tried again, so dead-lettering does not count them."""
    consumed_id: str | None = None

    @staticmethod
    def outage(exc: BaseException) -> bool:
        """Whether ``exc`` means a store is unreachable (set per service by ``middleware_for``)."""
        return isinstance(exc, OSError)

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        """Run the handler with the message's correlation bound; map failures to replies.

        A batch of commands passes straight through: ``bus.batches`` runs each of its
        entries through :meth:`handle`.
        """
        raw = msg.raw_message
        if isinstance(raw, dict) and raw.get("type") == BATCH:
            return await call_next(msg)
        return await self.handle(msg, call_next)

    async def handle(self, msg: StreamMessage[Any], call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """One message: refuse it, or run ``call_next`` on it; reply to and ack a command."""
        headers = msg.headers
        started = time.perf_counter()
        raw = msg.raw_message if isinstance(msg.raw_message, dict) else {}
        stream = raw.get("channel", "")
        entry = entry_key(raw)
        if entry is not None and CLAIMED in headers and await self._not_to_run_again(msg, entry):
            await msg.nack()  # nothing in Redis, and FastStream does not ack it
            return None
        if entry is not None:
            self.in_hand.add(entry)
        acked = True
        token = _consumed_id.set(msg.message_id)
        # A plain FastStream subscriber's reply is published after this scope ends,
        # through this same instance: it needs the id too, for its causation_id.
        self.consumed_id = msg.message_id
        fields = {"service": self.service, "message_id": msg.message_id, "type": headers.get(TYPE)}
        outcome = "error"
        is_event = self.roles is not None and stream in self.roles.event_streams
        is_command = self.roles is not None and stream in self.roles.command_streams
        try:
            with correlated(msg.correlation_id, **fields):
                refused = self._refused(msg, stream) if is_event or is_command else None
                if refused is not None:
                    return await self._refuse(msg, raw, stream, refused, is_command=is_command, started=started)
                try:
                    if is_event and await self._dead_lettered(msg, raw):
                        outcome = "dead-lettered"
                        return None
                    result, outcome = await self._handle(call_next, msg, is_command=is_command)
                    if is_event and CLAIMED in headers:
                        await self._forget_failures(msg, raw)
                except Exception as exc:
                    if is_event:
                        acked = False  # it stays pending, and its skipped claims still count for nothing
                        await self._remember_failure(msg, raw, exc)
                    raise
                finally:
                    logger.info(
                        "handled {}",
                        stream,
                        outcome=outcome,
                        duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    )
                    if self.metrics is not None:
                        elapsed = time.perf_counter() - started
                        self.metrics.handled(stream, outcome, elapsed, redelivered=CLAIMED in headers)
            if is_command:
                await self._finish_command(msg, raw, result)
                return None
            return result
        finally:
            self._let_go(entry, acked=acked)
            _consumed_id.reset(token)

    def _let_go(self, entry: tuple[str, Any] | None, *, acked: bool) -> None:
        """This process no longer handles ``entry``; once acked, its skipped claims are forgotten."""
        if entry is not None:
            self.in_hand.discard(entry)
            if acked:
                self.skipped_claims.pop(entry, None)

    async def _not_to_run_again(self, msg: StreamMessage[Any], entry: tuple[str, Any]) -> bool:
        """Whether a claimed entry is one this process still handles, or acked since the claim.

        A claimer takes entries pending longer than BUS_CLAIM_IDLE_MS: one still being
        handled here is answered and acked by that delivery, and running it again beside
        it would answer twice, the second time from the state the first has just changed.
        An entry acked between the claim and now is done with.
        """
        stream, entry_id = entry
        if entry in self.in_hand:
            self.skipped_claims[entry] += 1
            logger.info("entry {} of {} is still being handled here: left to that delivery", entry_id, stream)
            return True
        client = getattr(msg, "consumer", None)
        if client is None:
            return False
        group = getattr(msg, "group", None) or self.service
        if await client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1):
            return False
        self.skipped_claims.pop(entry, None)
        logger.info("entry {} of {} was acked since it was claimed: not run again", entry_id, stream)
        return True

    def _refused(self, msg: StreamMessage[Any], stream: str) -> str | None:
        """Why ``msg`` must not be handled here (bad signature, sender not allowed), or None."""
        if self.verifier is None or self.roles is None:
            return None
        allowed = self.roles.allowed_producers(stream)
        return refusal(self.verifier, allowed or (), msg.headers, msg.body)

    async def _refuse(
        self,
        msg: StreamMessage[Any],
        raw: dict[str, Any],
        stream: str,
        reason: str,
        *,
        is_command: bool,
        started: float,
    ) -> None:
        """Log and ack a refused message without running its handler.

        An authenticated sender that is not allowed gets a ``forbidden`` reply (a deployment
        mistake to debug); an unauthenticated one gets nothing: its ``reply_to`` is its own
        choice, and answering would make this service publish signed messages wherever a
        forger asks.
        """
        logger.warning(
            "refused a message on {} ({}) from producer {!r}, message id {}",
            stream,
            reason,
            msg.headers.get(PRODUCER),
            msg.message_id,
            reply_to=msg.headers.get(REPLY_TO),
        )
        outcome = "forbidden" if reason == "forbidden" else "unauthenticated"
        if self.metrics is not None:
            self.metrics.handled(stream, outcome, time.perf_counter() - started, redelivered=CLAIMED in msg.headers)
        if is_command:
            reply = None
            if reason == "forbidden":
                reply = error_response(
                    ErrorReply(code=ErrorCode.FORBIDDEN, message=f"{msg.headers.get(PRODUCER)} may not send this.")
                )
            await self._finish_command(msg, raw, reply, reply_allowed=reply is not None)
        # An event returns normally: FastStream acks it, and it is never handled.

    async def _handle(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any], *, is_command: bool
    ) -> tuple[Any, str]:
        """The handler's result and the outcome to log.

        A failing command gets an error reply (sent when it has a ``reply_to``) and is
        done with. A failing event raises, so it is not acked and will be tried again.
        """
        if deadline_passed(msg.headers):
            error = ErrorReply(code=ErrorCode.EXPIRED, message="The deadline passed before the work began.")
            return error_response(error), "expired"
        # A plain FastStream subscriber's command is known by its reply_to alone.
        is_command = is_command or bool(msg.reply_to)
        try:
            return await call_next(msg), "ok"
        except ReplyError as exc:
            if not is_command:
                raise
            return error_response(exc.reply), exc.reply.code.value
        except ValidationError as exc:
            reply = validation_error_reply(exc)
            if not is_command:
                # Without the input values: a payload may hold secrets, and this is logged.
                raise InvalidMessage(reply.model_dump_json(include={"details"})) from None
            return error_response(reply), "invalid"
        except Exception as exc:
            if self.outage(exc):
                # Its store is down, not the handler broken: no stack trace, and a retry may work.
                logger.warning("a store the handler needs is unavailable: {!r}", exc)
                if not is_command:
                    raise
                unavailable = ErrorReply(
                    code=ErrorCode.UNAVAILABLE, message="The service cannot reach its store; try again shortly."
                )
                return error_response(unavailable), "unavailable"
            logger.exception("handler failed")
            if not is_command:
                raise
            internal = ErrorReply(code=ErrorCode.INTERNAL, message="The service failed to handle the message.")
            return error_response(internal), "error"

    async def _dead_lettered(self, msg: StreamMessage[Any], raw: dict[str, Any]) -> bool:
        """Move an event delivered too often to ``dlq.<stream>``; True when it was moved.

        Returning normally then acks it on the source stream.
        """
        if self.roles is None or CLAIMED not in msg.headers:
            return False  # read for the first time: one delivery, no need to ask Redis
        delivered: int = await msg.get_delivery_count()  # type: ignore[attr-defined]
        key = entry_key(raw)
        attempts = delivered - (self.skipped_claims[key] if key is not None else 0)
        if attempts <= self.roles.max_deliveries:
            return False
        client = msg.consumer  # type: ignore[attr-defined]
        stream, entry_id = raw["channel"], raw["message_ids"][0]
        errors = f"{stream}{FAILURES_SUFFIX}"
        last_error = await client.hget(errors, entry_id)
        if last_error and last_error.startswith(OUTAGE_MARK):
            return False  # it failed for want of a store, not for what it says: keep trying
        fields = {
            wire.DATA_FIELD: raw["data"].get(wire.DATA_FIELD.encode(), b""),
            "source_stream": stream,
            "source_id": entry_id,
            "group": self.service,
            "attempts": str(attempts),
            "error": last_error or b"unknown",
            "correlation_id": msg.correlation_id,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }
        await client.xadd(self.roles.dead_letter_stream(stream), fields)
        await client.hdel(errors, entry_id)
        logger.error("dead-lettered after {} deliveries: {}", attempts, (last_error or b"").decode(errors="replace"))
        return True

    async def _forget_failures(self, msg: StreamMessage[Any], raw: dict[str, Any]) -> None:
        """A redelivered event succeeded: drop the error kept for its dead letter."""
        client = getattr(msg, "consumer", None)
        if client is not None and raw.get("message_ids"):
            await client.hdel(f"{raw['channel']}{FAILURES_SUFFIX}", raw["message_ids"][0])

    async def _remember_failure(self, msg: StreamMessage[Any], raw: dict[str, Any], exc: Exception) -> None:
        """Keep the latest error of a failed event, for its dead letter."""
        client = getattr(msg, "consumer", None)
        if client is None or not raw.get("message_ids"):
            return
        text = f"{type(exc).__name__}: {exc}"[:1000]
        if self.outage(exc):
            text = OUTAGE_MARK.decode() + text
        try:
            await client.hset(f"{raw['channel']}{FAILURES_SUFFIX}", raw["message_ids"][0], text)
        except Exception as redis_error:  # the failure itself is what matters; log and go on
            logger.warning("could not record the failure: {!r}", redis_error)

    async def _finish_command(
        self, msg: StreamMessage[Any], raw: dict[str, Any], result: Any, *, reply_allowed: bool = True
    ) -> None:
        """Reply, ack, and delete a secret entry: one round trip to Redis.

        On the ``replies`` connection the commands finished in one event-loop turn share
        a single write and read.
        """
        if self.replies is None or getattr(msg, "consumer", None) is None:
            return  # not from Redis (FastStream's in-memory test broker): nothing to ack
        stream, ids = raw["channel"], raw["message_ids"]
        commands: list[tuple[Any, ...]] = []
        if msg.reply_to and reply_allowed:
            commands.append(("PUBLISH", msg.reply_to, self._reply(msg, result)))
        commands.append(("XACK", stream, getattr(msg, "group", None) or self.service, *ids))
        if self.roles is not None and stream in self.roles.secret_streams:
            commands.append(("XDEL", stream, *ids))
        connection = self.answers(stream)
        if isinstance(connection, ReadConnection) and connection.send_without_replies(*commands):
            return  # before the next read, in its write: no round trip of their own
        results = await connection.execute(*commands)
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            raise errors[0]

    @classmethod
    def answers(cls, stream: str) -> RespConnection:
        """The connection for the replies and acks of ``stream``'s entries now.

        Its reader's connection while no read is under way on it (a command whose handler
        did not wait, an event): queued before the next read, they share its write. Else
        the service's ``replies`` connection.
        """
        reader = cls.readers.get(stream)
        idle = reader.idle() if reader is not None else None
        if idle is not None:
            return idle
        if cls.replies is None:
            msg = "no connection for replies: the middleware is not on a busway broker"
            raise RuntimeError(msg)
        return cls.replies

    def _reply(self, msg: StreamMessage[Any], result: Any) -> bytes:
        """The wire bytes of the reply to ``msg``: a result, or an error response."""
        extra: dict[str, Any] = {}
        body = result
        if isinstance(result, Response):
            extra, body = dict(result.headers), result.body
        if isinstance(body, BaseModel):
            payload = body.__pydantic_serializer__.to_json(body)
            kind = type(body).__name__
        else:
            payload, kind = _json.encode(body), "raw"
        envelope = {
            MESSAGE_ID: new_id(),
            TYPE: kind,
            OCCURRED_AT: datetime.now(UTC).isoformat(),
            CORRELATION_ID: msg.correlation_id,
            CAUSATION_ID: msg.message_id,
            PRODUCER: self.service,
            **extra,
        }
        return wire.encode(envelope, payload, signer=self.signer)

    async def publish_scope(self, call_next: Callable[[PublishCommand], Awaitable[Any]], cmd: PublishCommand) -> Any:
        """Fill in the envelope of everything this process publishes."""
        headers = cmd.headers
        headers.setdefault(MESSAGE_ID, new_id())
        headers.setdefault(OCCURRED_AT, datetime.now(UTC).isoformat())
        headers.setdefault(PRODUCER, self.service)
        if TYPE not in headers:
            headers[TYPE] = type(cmd.body).__name__ if isinstance(cmd.body, BaseModel) else "raw"
        if CAUSATION_ID not in headers:
            consumed = _consumed_id.get() or self.consumed_id
            if consumed:
                headers[CAUSATION_ID] = consumed
        if not cmd.correlation_id:
            cmd.correlation_id = current_correlation_id() or new_id()
        return await call_next(cmd)


def middleware_for(
    service: str,
    roles: StreamRoles | None = None,
    *,
    outage: Callable[[BaseException], bool] | None = None,
    metrics: HandlerMetrics | None = None,
    signer: Signer | None = None,
    verifier: Verifier | None = None,
    replies: RespConnection,
) -> type[BusMiddleware]:
    """The middleware class of one service: stamps ``producer``, replies to and acks its commands.

    ``outage`` tells a failure of a store the handler depends on (its database down) from a
    broken handler: a command gets UNAVAILABLE instead of INTERNAL, and an event is retried
    without ever being dead-lettered for it. With ``metrics``, it counts every message it handles.
    ``signer`` signs its replies; with ``verifier``, a message on one of ``roles``' streams
    is handled only when signed by a producer that stream allows. ``replies``: the
    connection command replies and acks go out on.
    """
    attributes: dict[str, Any] = {
        "service": service,
        "roles": roles,
        "metrics": metrics,
        "signer": signer,
        "verifier": verifier,
        "replies": replies,
        "readers": {},
        "in_hand": set(),
        "skipped_claims": Counter(),
    }
    if outage is not None:
        attributes["outage"] = staticmethod(outage)
    return type(f"{service.title()}BusMiddleware", (BusMiddleware,), attributes)
