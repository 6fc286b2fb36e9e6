"""A lean, pipelined Redis connection for the bus's hot path.

Every request through busway costs an XADD in the gateway, a PUBLISH and an XACK in the
handler and a Pub/Sub delivery back. Through redis-py each of those pays for a pool
checkout, a pipeline object, retry wrappers and a reader task: about a hundred
microseconds of Python per call, more than the rest of the request (docs/performance.md).
Here commands are packed by hiredis and written straight to one socket; whatever is
queued in one event-loop turn leaves in one write, and replies resolve their callers in
order. Everything else (scripts, scans, admin) stays on redis-py.

Failures raise redis-py's exceptions (``ConnectionError``, ``TimeoutError``), and an
error reply comes back as a ``ResponseError`` in its command's place, so callers handle
both clients alike.
"""

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[str | bytes | int | float]

_LOST = "the connection to Redis was lost"


def _pack(command: Command) -> bytes:
    """One command in RESP."""
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]  # its stub says a 1-tuple
    return packed


class _Batch:
    """The replies one caller waits for."""

    __slots__ = ("expected", "future", "replies")

    def __init__(self, future: "asyncio.Future[list[Any]]", expected: int) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    """One socket: writes coalesced per loop turn, replies parsed by hiredis, in order."""

    def __init__(self, on_push: Callable[[Any], None] | None) -> None:
        self._reader = hiredis.Reader()
        self._on_push = on_push
        self._waiting: deque[_Batch] = deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A Pub/Sub connection may be quiet for hours: let the kernel notice a dead peer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def send(self, packed: list[bytes]) -> "asyncio.Future[list[Any]]":
        if self._transport is None or self.lost.done():
            raise RedisConnectionError(_LOST)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Batch(future, len(packed)))
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing += packed
        return future

    def send_unanswered(self, packed: bytes) -> None:
        """Write a command whose replies arrive as pushes (SUBSCRIBE), not in order."""
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(packed)

    def close(self) -> None:
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
        error = RedisConnectionError(f"{_LOST}: {exc}" if exc else _LOST)
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self) -> None:
        """Drop the connection now: whoever still waits on it fails at once."""
        if self._transport is not None:
            self._transport.abort()
        self.connection_lost(None)


class RespConnection:
    """One pipelined connection to the Redis at ``url``, opened on first use and reopened after a loss.

    ``timeout``: seconds a command may wait for its reply; past it the connection is taken
    for dead (closed, so the next call opens a new one) and ``TimeoutError`` is raised.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, connect_timeout: float = 5.0) -> None:
        self._options: dict[str, Any] = dict(parse_url(url))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Lock | None = None

    async def execute(self, *commands: Command) -> list[Any]:
        """Send ``commands`` together; their replies in order (an error reply as a ``ResponseError``)."""
        protocol = await self._connected()
        future = protocol.send([_pack(command) for command in commands])
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            protocol.abort()  # the replies still owed would be handed to later callers
            raise RedisTimeoutError(f"no reply from Redis within {self._timeout:g}s") from None

    async def stop(self) -> None:
        """Close the connection (it reopens if used again)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(protocol.lost), 1)

    async def start(self) -> None:
        """Open the connection now rather than on first use."""
        await self._connected()

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost.done():
            return protocol
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._protocol is None or self._protocol.lost.done():
                self._protocol = await open_protocol(self._options, self._connect_timeout)
            return self._protocol


async def open_protocol(
    options: dict[str, Any], connect_timeout: float, on_push: Callable[[Any], None] | None = None
) -> _Protocol:
    """Connect, authenticate and select the database that ``options`` (from ``parse_url``) name."""
    loop = asyncio.get_running_loop()

    def factory() -> _Protocol:
        return _Protocol(on_push)

    try:
        async with asyncio.timeout(connect_timeout):
            if options.get("connection_class") is UnixDomainSocketConnection:
                _, protocol = await loop.create_unix_connection(factory, options["path"])
            else:
                tls = ssl.create_default_context() if options.get("connection_class") is SSLConnection else None
                host, port = options.get("host", "localhost"), options.get("port", 6379)
                _, protocol = await loop.create_connection(factory, host, port, ssl=tls)
            handshake: list[Command] = []
            if options.get("password") is not None:
                username = options.get("username")
                handshake.append(("AUTH", username, options["password"]) if username else ("AUTH", options["password"]))
            if options.get("db"):
                handshake.append(("SELECT", options["db"]))
            if handshake:
                replies = await protocol.send([_pack(command) for command in handshake])
                errors = [reply for reply in replies if isinstance(reply, Exception)]
                if errors:
                    protocol.abort()
                    raise RedisConnectionError(f"Redis refused the connection: {errors[0]}")
    except TimeoutError:
        raise RedisTimeoutError(f"could not connect to Redis within {connect_timeout:g}s") from None
    except OSError as exc:
        raise RedisConnectionError(f"could not connect to Redis: {exc}") from exc
    return protocol


class RespSubscription:
    """A Pub/Sub subscription to one channel on its own connection; resubscribes after a loss.

    ``on_message`` gets each message's data, synchronously, as it is parsed.
    """

    def __init__(self, url: str, channel: str, on_message: Callable[[bytes], None], *, name: str = "") -> None:
        self._options: dict[str, Any] = dict(parse_url(url))
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
        await asyncio.wait_for(self._subscribed.wait(), timeout=timeout)

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
                self._on_message(reply[2])
            elif kind == b"subscribe":
                self._subscribed.set()

    async def _run(self) -> None:
        while True:
            try:
                protocol = await open_protocol(self._options, 5.0, on_push=self._push)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._lost(exc)
                await asyncio.sleep(0.5)
                continue
            try:
                # SUBSCRIBE's confirmation arrives as a push: nothing waits for it in order.
                protocol.send_unanswered(_pack(("SUBSCRIBE", self._channel)))
                await protocol.lost
            finally:
                protocol.close()
            self._lost(RedisConnectionError(_LOST))
            await asyncio.sleep(0.5)

    def _lost(self, exc: Exception) -> None:
        if self.on_loss is not None:
            self.on_loss(exc)
