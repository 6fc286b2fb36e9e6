"""A lean, pipelined Redis connection for the bus's hot path.

Every request through busway costs an XADD in the gateway, a PUBLISH and an XACK in the
handler and a Pub/Sub delivery back. Through redis-py each of those pays for a pool
checkout, a pipeline object, retry wrappers and a reader task: about a hundred
microseconds of Python per call, more than the rest of the request (docs/performance.md).
Here commands are packed by hiredis and written straight to one socket; whatever is
queued in one event-loop turn leaves in one write, and replies resolve their callers in
order. The gateway's lockout scripts use it too (``Script``), and the reads of the
stream subscribers FastStream runs (``bus.batches.read_on``); everything else (the
claimers, scans, admin) stays on redis-py.

Failures raise redis-py's exceptions (``ConnectionError``, ``TimeoutError``), and an
error reply comes back as a ``ResponseError`` in its command's place, so callers handle
both clients alike.
"""

import asyncio
import contextlib
import hashlib
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import hiredis
from loguru import logger
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[str | bytes | int | float]

_LOST = "the connection to Redis was lost"


def _options(url: str, client_name: str) -> dict[str, Any]:
    """How to connect: redis-py's reading of ``url``, and a client name Redis accepts."""
    options: dict[str, Any] = dict(parse_url(url))
    if client_name:
        options["client_name"] = re.sub(r"[^A-Za-z0-9._:-]", "-", client_name)[:128]
    return options


def _pack(command: Command) -> bytes:
    """One command in RESP."""
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]  # its stub says a 1-tuple
    return packed


class _Batch:
    """The replies one caller waits for."""

    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, future: "asyncio.Future[list[Any]]", expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.sent_at = sent_at
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    """One socket: writes coalesced per loop turn, replies parsed by hiredis, in order."""

    def __init__(self, on_push: Callable[[Any], None] | None, stall_timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._on_push = on_push
        self._stall_timeout = stall_timeout
        self._waiting: deque[_Batch] = deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._watch: asyncio.TimerHandle | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.skips_replies = False
        """Whether Redis takes CLIENT REPLY SKIP from this connection (``ReadConnection``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A Pub/Sub connection may be quiet for hours: let the kernel notice a dead peer
            # (or a NAT that forgot it) within about a minute, not the default two hours.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, option):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def send(self, packed: list[bytes]) -> "asyncio.Future[list[Any]]":
        if self._transport is None or self.lost.done():
            raise RedisConnectionError(_LOST)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self._watch is None:
            self._watch = loop.call_at(loop.time() + self._stall_timeout, self._check_stall)
        self._waiting.append(_Batch(future, len(packed), loop.time()))
        self._queue(packed)
        return future

    def _check_stall(self) -> None:
        """Fail the connection when its oldest owed reply is ``stall_timeout`` late.

        Callers may give up sooner (a deadline of their own): the connection itself must
        notice a Redis that stopped answering, or every later caller would queue behind
        replies that never come. One timer at a time, re-armed for the oldest batch.
        """
        self._watch = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0].sent_at + self._stall_timeout
        if loop.time() + 0.001 >= due:  # uvloop may fire a timer up to a millisecond early
            self.abort(RedisTimeoutError(f"no reply from Redis within {self._stall_timeout:g}s"))
        else:
            self._watch = loop.call_at(due, self._check_stall)

    def send_unanswered(self, packed: bytes) -> None:
        """Write a command whose replies arrive as pushes (SUBSCRIBE), not in order."""
        self._queue([packed])

    def _queue(self, packed: list[bytes]) -> None:
        """Add to this loop turn's write, scheduling it if it is the first."""
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing += packed

    def close(self) -> None:
        # What this loop turn queued goes out first (acks and replies sent with no reply to
        # wait for have nobody else to see them off); the transport sends it, then closes.
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(outgoing))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                reply = ResponseError(str(reply))
            if not self._waiting:
                if self._on_push is not None:
                    self._on_push(reply)
                continue
            batch = self._waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                self._waiting.popleft()
                if not batch.future.done():  # its caller may have given up waiting
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"{_LOST}: {exc}" if exc else _LOST))

    def _fail(self, error: Exception) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self, error: Exception | None = None) -> None:
        """Drop the connection now: whoever still waits on it fails at once (with ``error``)."""
        if self._transport is not None:
            self._transport.abort()
        self._fail(error or RedisConnectionError(_LOST))


class RespConnection:
    """One pipelined connection to the Redis at ``url``, opened on first use and reopened after a loss.

    ``timeout``: seconds a command may wait for its reply; past it the connection is taken
    for dead (closed, so the next call opens a new one) and ``TimeoutError`` is raised.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, connect_timeout: float = 5.0, client_name: str = "") -> None:
        """``client_name``: what ``CLIENT LIST`` calls this connection (e.g. ``gateway:<instance>``)."""
        self._options: dict[str, Any] = _options(url, client_name)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Lock | None = None
        self._stops = 0

    async def execute(self, *commands: Command) -> list[Any]:
        """Send ``commands`` together; their replies in order (an error reply as a ``ResponseError``).

        A caller may give up early (cancellation, a deadline of its own): its replies are
        still read and dropped. A Redis silent for ``timeout`` seconds fails every caller
        with ``TimeoutError`` and the connection is replaced.
        """
        if not commands:
            return []
        return await self._send(None, commands)

    def submit(self, *commands: Command) -> "asyncio.Future[list[Any]]":
        """``execute`` without awaiting: a future of the replies, the commands queued at once.

        Queued in this loop turn's write when connected; else sent once the connection
        opens. The future fails as ``execute`` would raise.
        """
        protocol = self._protocol
        if protocol is not None and not protocol.lost.done():
            return protocol.send([_pack(command) for command in commands])
        return asyncio.ensure_future(self._send(self._stops, commands))

    async def _send(self, stops: int | None, commands: Sequence[Command]) -> list[Any]:
        """Open the connection if need be (see ``_connected`` for ``stops``), then send."""
        protocol = await self._connected(stops)
        return await protocol.send([_pack(command) for command in commands])

    async def stop(self) -> None:
        """Close the connection (it reopens if used again); one being opened is closed as it opens."""
        self._stops += 1
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(protocol.lost), 1)

    async def _opened(self, protocol: _Protocol) -> None:
        """What to do on a new connection before its first use (the handshake is done)."""

    async def _connected(self, stops: int | None = None) -> _Protocol:
        """The open connection, opened now if need be.

        ``stops``: the count of stops when the caller asked; if a stop came since, a
        connection this opens is closed at once rather than left open after the stop.
        """
        protocol = self._protocol
        if protocol is not None and not protocol.lost.done():
            return protocol
        if self._opening is None:
            self._opening = asyncio.Lock()
        stops = self._stops if stops is None else stops
        async with self._opening:
            if self._protocol is None or self._protocol.lost.done():
                opened = await open_protocol(self._options, self._connect_timeout, self._timeout)
                try:
                    await self._opened(opened)
                except BaseException:
                    opened.abort()
                    raise
                if stops != self._stops:
                    # Stopped since it was asked for (a submitted XADD that outlived its caller).
                    opened.close()
                    raise RedisConnectionError(_LOST)
                self._protocol = opened
            elif stops != self._stops:
                raise RedisConnectionError(_LOST)
            return self._protocol


_SKIP_REPLY = _pack(("CLIENT", "REPLY", "SKIP"))


class ReadConnection(RespConnection):
    """The connection of one subscriber's blocking reads (``XREADGROUP ... BLOCK``).

    While a read waits, anything else sent on it would wait behind the read. Between two
    reads it is idle, and the acks and replies of what the last read brought can go on
    it: queued in the same event-loop turn as the next read, they leave in the same write
    (one syscall, and one wake-up of Redis, instead of two). ``between_reads`` says which;
    the reader keeps it (``bus.batches.read_on``), and ``idle()`` is what senders ask.

    Those acks and replies go without a reply of Redis's (``send_without_replies``): the
    read after them, on the same connection, says the connection works, and a reply to
    each would wake the process once more only to be dropped.
    """

    between_reads = False

    def idle(self) -> "ReadConnection | None":
        """This connection when no read is under way on it, else None."""
        return self if self.between_reads else None

    async def _opened(self, protocol: _Protocol) -> None:
        """Ask whether Redis takes CLIENT REPLY here (an ACL may not allow it): answer it replies."""
        [reply] = await protocol.send([_pack(("CLIENT", "REPLY", "ON"))])
        protocol.skips_replies = reply == b"OK"
        if not protocol.skips_replies:
            logger.info("CLIENT REPLY is refused ({}): acks on the read connection wait for replies", reply)

    def send_without_replies(self, *commands: Command) -> bool:
        """Queue ``commands`` before the next read, each with CLIENT REPLY SKIP; False when it cannot.

        It cannot while a read is under way (they would wait behind it), with the
        connection lost, or when Redis refused CLIENT REPLY on it: send them another way then.
        What fails in them is not heard of: an ack that did not happen leaves its entry
        pending, and a reply that did not go out ends in its requester's timeout, as when
        the connection is lost just after them.
        """
        protocol = self._protocol
        if not self.between_reads or protocol is None or protocol.lost.done() or not protocol.skips_replies:
            return False
        protocol.send_unanswered(b"".join(_SKIP_REPLY + _pack(command) for command in commands))
        return True

    async def stop(self) -> None:
        """Close it; nothing more goes on it until a read is answered on it again."""
        self.between_reads = False
        await super().stop()

    def out_of_step(self, reply: Any) -> bool:
        """Whether ``reply``, what a read got, cannot be a read's: drop the connection then.

        A read answers with entries, nothing (its BLOCK ran out) or an error. Anything else
        is the reply of an earlier command: Redis refused CLIENT REPLY after the connection
        was opened (an ACL changed since), so the commands sent with SKIP got replies nobody
        waits for, and every reply after them would go to the wrong caller. The connection
        is dropped (its waiting callers fail); the next one asks again whether CLIENT REPLY
        is allowed. The entries of the lost read stay pending, for the claimer.
        """
        if reply is None or isinstance(reply, list):
            return False
        if isinstance(reply, ResponseError) and not str(reply).startswith("NOPERM"):
            return False  # NOGROUP and the like: the read's own error
        logger.warning("a read got the reply of another command ({!r}): replacing its connection", reply)
        protocol = self._protocol
        if protocol is not None:
            protocol.abort(RedisConnectionError("replies out of step on a read connection"))
        return True


async def open_protocol(
    options: dict[str, Any],
    connect_timeout: float,
    stall_timeout: float,
    on_push: Callable[[Any], None] | None = None,
) -> _Protocol:
    """Connect, authenticate and select the database that ``options`` (from ``parse_url``) name."""
    loop = asyncio.get_running_loop()

    def factory() -> _Protocol:
        return _Protocol(on_push, stall_timeout)

    protocol: _Protocol | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            if options.get("connection_class") is UnixDomainSocketConnection:
                _, protocol = await loop.create_unix_connection(factory, options["path"])
            else:
                tls = _tls_context(options) if options.get("connection_class") is SSLConnection else None
                host, port = options.get("host", "localhost"), options.get("port", 6379)
                _, protocol = await loop.create_connection(factory, host, port, ssl=tls)
            await _handshake(protocol, options)
    except BaseException as exc:
        if protocol is not None:
            protocol.abort()  # half-open: never leave the socket behind
        if isinstance(exc, TimeoutError):
            raise RedisTimeoutError(f"could not connect to Redis within {connect_timeout:g}s") from None
        if isinstance(exc, OSError) and not isinstance(exc, RedisConnectionError):
            raise RedisConnectionError(f"could not connect to Redis: {exc}") from exc
        raise
    return protocol


async def _handshake(protocol: _Protocol, options: dict[str, Any]) -> None:
    """AUTH, SELECT and CLIENT SETNAME as the URL and ``client_name`` say; a refusal is a ``ConnectionError``."""
    handshake: list[Command] = []
    if options.get("password") is not None:
        username = options.get("username")
        handshake.append(("AUTH", username, options["password"]) if username else ("AUTH", options["password"]))
    if options.get("db"):
        handshake.append(("SELECT", options["db"]))
    if options.get("client_name"):
        handshake.append(("CLIENT", "SETNAME", options["client_name"]))
    if handshake:
        replies = await protocol.send([_pack(command) for command in handshake])
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            raise RedisConnectionError(f"Redis refused the connection: {errors[0]}")


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` URL, as redis-py reads them (``ssl_cert_reqs`` & co)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password"))
    check_hostname = options.get("ssl_check_hostname", True)
    requirement = options.get("ssl_cert_reqs", "required")
    if isinstance(requirement, str):
        requirement = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(requirement.lower(), ssl.CERT_REQUIRED)
    context.check_hostname = bool(check_hostname) and requirement != ssl.CERT_NONE
    context.verify_mode = requirement
    return context


class Script:
    """A Lua script, run by its SHA1 (EVALSHA) and sent whole only when Redis lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, connection: RespConnection, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """The script's result on ``connection``; an error reply raises ``ResponseError``."""
        return await self.queued(connection, keys, args)

    def queued(
        self, connection: RespConnection, keys: Sequence[str], args: Sequence[str | int]
    ) -> Coroutine[Any, Any, Any]:
        """``__call__`` with its EVALSHA queued on ``connection`` now, ahead of anything queued later.

        What it returns is awaited for the result, whenever (or in a task of its own).
        """
        tail = (len(keys), *keys, *args)
        return self._result(connection, connection.submit(("EVALSHA", self.sha, *tail)), tail)

    async def _result(
        self, connection: RespConnection, sent: "asyncio.Future[list[Any]]", tail: tuple[str | int, ...]
    ) -> Any:
        [result] = await sent
        if isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT"):
            [result] = await connection.execute(("EVAL", self.source, *tail))
        if isinstance(result, Exception):
            raise result
        return result


class RespSubscription:
    """A Pub/Sub subscription to one channel on its own connection; resubscribes after a loss.

    ``on_message`` gets each message's data, synchronously, as it is parsed.
    """

    def __init__(
        self, url: str, channel: str, on_message: Callable[[bytes], None], *, name: str = "", client_name: str = ""
    ) -> None:
        """``name``: of the reading task and in logs; ``client_name``: what ``CLIENT LIST`` calls it."""
        self._options = _options(url, client_name)
        self._channel = channel
        self._on_message = on_message
        self._name = name or f"subscription {channel}"
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_loss: Callable[[Exception], None] | None = None
        """Called with the error when the connection is lost or cannot be made (then retried)."""

    async def start(self, timeout: float = 10) -> None:
        """Subscribe; returns once messages can arrive."""
        self._task = asyncio.create_task(self._run(), name=self._name)
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Unsubscribe and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _push(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                try:
                    self._on_message(reply[2])
                except Exception:  # one bad message must not cost the connection and the replies after it
                    logger.exception("{}: a message could not be handled", self._name)
            elif kind == b"subscribe":
                self._subscribed.set()

    async def _run(self) -> None:
        pause = 0.5
        while True:
            try:
                protocol = await open_protocol(self._options, 5.0, 5.0, on_push=self._push)
            except Exception as exc:  # refused, unreachable, misconfigured: say so and try again
                self._lost(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            pause = 0.5
            try:
                # SUBSCRIBE's confirmation arrives as a push: nothing waits for it in order.
                protocol.send_unanswered(_pack(("SUBSCRIBE", self._channel)))
                await protocol.lost
            finally:
                protocol.close()
            self._lost(RedisConnectionError(_LOST))
            await asyncio.sleep(pause)

    def _lost(self, exc: Exception) -> None:
        if self.on_loss is not None:
            self.on_loss(exc)
