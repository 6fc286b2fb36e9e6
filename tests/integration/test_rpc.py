"""Request-reply on real Redis: results, typed errors at once (never a timeout), deadlines."""

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from unittest import mock

import pytest
from redis.asyncio import Redis

from bus import resp
from bus.broker import BuswayBroker, Consumer, create_broker, create_redis
from bus.rpc import BusClient
from bus.settings import BusSettings
from schemas.base import Contract
from schemas.errors import ErrorCode, ReplyError
from tests.integration.silent_redis import silent_server

pytestmark = pytest.mark.integration


class Echo(Contract):
    text: str
    mode: str = "ok"


class Echoed(Contract):
    text: str


executed: list[str] = []


@asynccontextmanager
async def running(
    redis_url: str, service: str, subscribe: Callable[[BuswayBroker, Consumer], None], **options: Any
) -> AsyncIterator[BusClient]:
    """A broker with the subscribers ``subscribe`` adds, and a client, on a fresh prefix.

    ``options``: BusSettings fields besides the URL, the prefix and the polling interval.
    """
    settings = BusSettings(
        redis_url=redis_url, prefix=f"test-rpc-{uuid.uuid4().hex[:8]}:", polling_interval_ms=100, **options
    )
    consumer = Consumer(settings, service, f"{service}-1")
    server = create_broker(settings, service, consumer)
    subscribe(server, consumer)
    redis = create_redis(settings)
    client = BusClient(settings, "client-1", producer="client")
    await consumer.ensure_groups(redis)
    await server.start()
    await client.start()
    try:
        yield client
    finally:
        await client.stop()
        await server.stop()
        keys = [k async for k in redis.scan_iter(match=f"{settings.prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def echo_service(server: BuswayBroker, consumer: Consumer) -> None:
    @consumer.command(server, "echo.say", allow={"client"})
    async def say(cmd: Echo) -> Echoed:
        executed.append(cmd.text)
        if cmd.mode == "refuse":
            raise ReplyError("No, thanks.", code=ErrorCode.FORBIDDEN)
        if cmd.mode == "crash":
            raise RuntimeError("internal detail that must not leak")
        if cmd.mode == "slow":
            await asyncio.sleep(0.3)  # past the reader's next read (polling 100 ms)
        return Echoed(text=cmd.text.upper())


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[tuple[BusClient, None]]:
    async with running(redis_url, "echo", echo_service) as client:
        yield client, None


async def test_a_result_comes_back_typed(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    assert await client.request("echo.say", Echo(text="hi"), Echoed) == Echoed(text="HI")


async def test_concurrent_requests_get_their_own_replies(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    texts = [f"m{i}" for i in range(50)]
    replies = await asyncio.gather(*(client.request("echo.say", Echo(text=t), Echoed) for t in texts))
    assert [r.text for r in replies] == [t.upper() for t in texts]


async def test_a_domain_error_arrives_as_a_typed_error_not_a_timeout(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    started = time.monotonic()
    with pytest.raises(ReplyError) as caught:
        await client.request("echo.say", Echo(text="x", mode="refuse"), Echoed, timeout=30)
    assert caught.value.reply.code == ErrorCode.FORBIDDEN
    assert caught.value.reply.message == "No, thanks."
    # A timeout would have taken the full 30 s; this checks the kind of failure, not speed.
    assert time.monotonic() - started < 30


async def test_a_crash_is_an_internal_error_without_details(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    with pytest.raises(ReplyError) as caught:
        await client.request("echo.say", Echo(text="x", mode="crash"), Echoed, timeout=30)
    assert caught.value.reply.code == ErrorCode.INTERNAL
    assert "internal detail" not in caught.value.reply.message


async def test_a_rejected_payload_is_a_typed_error_with_field_details(bus: tuple[BusClient, None]) -> None:
    client, _ = bus

    class Wrong(Contract):
        texte: int

    with pytest.raises(ReplyError) as caught:
        await client.request("echo.say", Wrong(texte=1), Echoed, timeout=30)
    assert caught.value.reply.code == ErrorCode.INVALID_PAYLOAD
    assert {detail.loc[-1] for detail in caught.value.reply.details} >= {"text"}


async def test_a_plain_faststream_subscriber_can_answer_too(redis_url: str) -> None:
    """Handlers written with broker.subscriber (FastStream's own replies) work with BusClient."""

    def plain(server: BuswayBroker, consumer: Consumer) -> None:
        @server.subscriber(stream=consumer.stream("plain.say"))  # type: ignore[untyped-decorator]
        async def say(cmd: Echo) -> Echoed:
            return Echoed(text=cmd.text * 2)

    async with running(redis_url, "plain", plain) as client:
        assert await client.request("plain.say", Echo(text="ab"), Echoed) == Echoed(text="abab")


async def test_no_subscriber_is_unavailable_after_the_timeout(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    with pytest.raises(ReplyError) as caught:
        await client.request("nobody.listens", Echo(text="x"), Echoed, timeout=0.3)
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE


async def test_each_request_times_out_at_its_own_deadline(bus: tuple[BusClient, None]) -> None:
    """A short deadline behind a long one, and one behind that: each fails when due, not later."""
    client, _ = bus
    loop = asyncio.get_running_loop()

    async def failed_after(timeout: float) -> float:
        started = loop.time()
        with pytest.raises(ReplyError) as caught:
            await client.request("nobody.listens", Echo(text="x"), Echoed, timeout=timeout)
        assert caught.value.reply.code == ErrorCode.UNAVAILABLE
        return loop.time() - started

    long = asyncio.create_task(failed_after(2.0))
    await asyncio.sleep(0.05)
    short = asyncio.create_task(failed_after(0.3))
    await asyncio.sleep(0.05)
    shorter = asyncio.create_task(failed_after(0.1))
    took = await asyncio.gather(shorter, short, long)
    for waited, timeout in zip(took, (0.1, 0.3, 2.0), strict=True):
        # Never early; late by a scheduling delay at most (generous for a busy CI machine).
        assert timeout - 0.002 <= waited < timeout + 0.25, (timeout, waited)


async def test_an_expired_command_is_not_executed(bus: tuple[BusClient, None]) -> None:
    client, _ = bus
    text = f"late-{uuid.uuid4().hex[:6]}"
    future = client.expect("late-id")
    # Its deadline passed a second ago: as if it had waited in the stream that long.
    late = {"deadline": str(int(time.time() * 1000) - 1000)}
    await client.send("echo.say", Echo(text=text), message_id="late-id", headers=late)
    with pytest.raises(ReplyError) as caught:
        await client.wait(future, Echoed, timeout=10, what="echo.say")
    assert caught.value.reply.code == ErrorCode.EXPIRED
    assert text not in executed


async def test_a_malformed_reply_is_an_internal_error_not_the_callers_fault(redis_url: str) -> None:
    class OldShape(Contract):
        name: str

    def skewed(server: BuswayBroker, consumer: Consumer) -> None:
        @consumer.command(server, "skew.say", allow={"client"})
        async def say(cmd: Echo) -> OldShape:
            return OldShape(name=cmd.text)

    async with running(redis_url, "skew", skewed) as client:
        with pytest.raises(ReplyError) as caught:
            await client.request("skew.say", Echo(text="x"), Echoed)
    assert caught.value.reply.code == ErrorCode.INTERNAL
    assert caught.value.reply.details == ()


async def test_an_unreachable_redis_is_unavailable_not_a_crash() -> None:
    settings = BusSettings(redis_url="redis://127.0.0.1:1", prefix="test-down:")
    client = BusClient(settings, "c", producer="c")
    try:
        with pytest.raises(ReplyError) as caught:
            await client.send("echo.say", Echo(text="x"))
    finally:
        await client.stop()
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE


async def test_a_request_to_an_unreachable_redis_fails_at_once_as_unavailable() -> None:
    settings = BusSettings(redis_url="redis://127.0.0.1:1", prefix="test-down:")
    client = BusClient(settings, "c", producer="c")
    started = time.monotonic()
    try:
        with pytest.raises(ReplyError) as caught:
            await client.request("echo.say", Echo(text="x"), Echoed, timeout=30)
    finally:
        await client.stop()
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert caught.value.reply.message == "The message bus is unreachable."
    assert time.monotonic() - started < 30  # the refused connection, not the deadline


async def test_a_request_to_a_redis_that_never_answers_ends_at_its_deadline() -> None:
    async with silent_server() as silent:
        settings = BusSettings(redis_url=f"redis://127.0.0.1:{silent.port}", prefix="test-silent:")
        client = BusClient(settings, "c", producer="c")
        try:
            with pytest.raises(ReplyError) as caught:
                await asyncio.wait_for(client.request("echo.say", Echo(text="x"), Echoed, timeout=0.3), 10)
        finally:
            await client.stop()
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert caught.value.reply.message == "No reply to echo.say within 0.3s."


@pytest.mark.parametrize("call", ["send", "request"])
async def test_redis_refusing_the_write_is_unavailable_not_a_crash(redis_url: str, call: str) -> None:
    settings = BusSettings(redis_url=redis_url, prefix=f"test-rpc-{uuid.uuid4().hex[:8]}:")
    redis = create_redis(settings)
    client = BusClient(settings, "c", producer="c")
    await redis.set(settings.name("echo.say"), "not a stream")  # XADD now answers WRONGTYPE
    try:
        attempt = (
            client.send("echo.say", Echo(text="x"))
            if call == "send"
            else client.request("echo.say", Echo(text="x"), Echoed, timeout=30)
        )
        with pytest.raises(ReplyError) as caught:
            await attempt
    finally:
        await client.stop()
        await redis.delete(settings.name("echo.say"))
        await redis.aclose()
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert caught.value.reply.message == "The message bus refused the message."


async def test_commands_are_read_on_a_connection_of_their_own_that_the_stop_closes(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)

    async def readers() -> list[dict[str, Any]]:
        """This process's command-reading connections (``bus.resp``, named by the broker)."""
        return [
            c
            for c in await redis.client_list()
            if c["name"].startswith("echo:read:") and c["name"].endswith(f":{os.getpid()}")
        ]

    try:
        async with running(redis_url, "echo", echo_service) as client:
            assert await client.request("echo.say", Echo(text="hi"), Echoed) == Echoed(text="HI")
            [reader] = await readers()
            assert reader["name"].endswith(f"echo.say:{os.getpid()}")
            assert reader["cmd"] == "xreadgroup"  # blocked on the next read, not on redis-py's pool
        assert await readers() == []
    finally:
        await redis.aclose()


@contextmanager
def recorded_writes() -> Iterator[list[tuple[object, bytes]]]:
    """Every write the bus's own connections (``bus.resp``) make while the block runs: (connection, bytes)."""
    writes: list[tuple[object, bytes]] = []
    flush = resp._Protocol._flush

    def recording(protocol: Any) -> None:
        writes.append((protocol, b"".join(protocol._outgoing)))
        flush(protocol)

    with mock.patch.object(resp._Protocol, "_flush", recording):
        yield writes


def commands_in(write: bytes) -> list[bytes]:
    """The command names of one write, in order (each command a RESP array of bulk strings).

    A CLIENT command is named with its arguments: ``CLIENT REPLY SKIP``.
    """
    names = []
    rest = write
    while rest:
        count, _, rest = rest.partition(b"\r\n")
        words = []
        for _ in range(int(count[1:])):
            length, _, rest = rest.partition(b"\r\n")
            words.append(rest[: int(length[1:])].upper())
            rest = rest[int(length[1:]) + 2 :]
        names.append(b" ".join(words) if words[0] == b"CLIENT" else words[0])
    return names


SKIP = b"CLIENT REPLY SKIP"


async def test_a_reply_ready_at_once_leaves_in_one_write_with_the_next_read(redis_url: str) -> None:
    with recorded_writes() as writes:
        async with running(redis_url, "echo", echo_service) as client:
            for text in ("a", "b", "c"):
                assert await client.request("echo.say", Echo(text=text), Echoed) == Echoed(text=text.upper())
    answered = [commands_in(write) for _, write in writes if b"PUBLISH" in write]
    # Reply, ack, then the next read: one syscall, and one wake-up of Redis, for all three;
    # and no replies to the reply and the ack, which would wake this process once more.
    assert answered == [[SKIP, b"PUBLISH", SKIP, b"XACK", b"XREADGROUP"]] * 3


async def test_a_reply_that_comes_after_the_next_read_goes_on_the_replies_connection(redis_url: str) -> None:
    with recorded_writes() as writes:
        async with running(redis_url, "echo", echo_service) as client:
            assert await client.request("echo.say", Echo(text="z", mode="slow"), Echoed) == Echoed(text="Z")
    readers = {connection for connection, write in writes if b"XREADGROUP" in write}
    [(connection, write)] = [(connection, write) for connection, write in writes if b"PUBLISH" in write]
    assert commands_in(write) == [b"PUBLISH", b"XACK"]
    # Not behind the read blocking on the reader's connection by then: it would wait for that read.
    assert connection not in readers


async def test_a_stopping_consumer_hands_its_unhandled_entries_to_the_others(redis_url: str) -> None:
    settings = BusSettings(redis_url=redis_url, prefix=f"test-rpc-{uuid.uuid4().hex[:8]}:", claim_idle_ms=60_000)
    consumer = Consumer(settings, "echo", "echo-stopping")
    stream = consumer.stream("echo.say").name
    redis = create_redis(settings)
    try:
        await consumer.ensure_groups(redis)
        for i in range(3):
            await redis.xadd(stream, {"__data__": f'{{"payload": {{"text": "{i}"}}}}'})
        await redis.xreadgroup("echo", "echo-stopping", {stream: ">"}, count=3)  # read, never handled
        assert await consumer.release(redis) == 3
        pending = await redis.xpending_range(stream, "echo", min="-", max="+", count=10)
        assert len(pending) == 3
        assert all(int(entry["time_since_delivered"]) >= 60_000 for entry in pending)
    finally:
        await redis.delete(stream)
        await redis.aclose()


async def test_commands_read_in_one_batch_run_side_by_side_up_to_max_workers(redis_url: str) -> None:
    running_now: list[str] = []
    peak = 0

    def slow(server: BuswayBroker, consumer: Consumer) -> None:
        @consumer.command(server, "slow.say", allow={"client"})
        async def say(cmd: Echo) -> Echoed:
            nonlocal peak
            running_now.append(cmd.text)
            peak = max(peak, len(running_now))
            await asyncio.sleep(0.05)
            running_now.remove(cmd.text)
            return Echoed(text=cmd.text.upper())

    async with running(redis_url, "slow", slow, max_workers=4, max_records=32) as client:
        texts = [f"s{i}" for i in range(40)]
        replies = await asyncio.gather(*(client.request("slow.say", Echo(text=t), Echoed) for t in texts))
    assert [r.text for r in replies] == [t.upper() for t in texts]
    assert peak == 4


async def test_a_stop_lets_the_commands_being_handled_finish_and_answer(redis_url: str) -> None:
    started = asyncio.Event()
    servers: list[tuple[BuswayBroker, Consumer]] = []

    def slow(server: BuswayBroker, consumer: Consumer) -> None:
        servers.append((server, consumer))

        @consumer.command(server, "slow.say", allow={"client"})
        async def say(cmd: Echo) -> Echoed:
            started.set()
            await asyncio.sleep(0.5)
            return Echoed(text=cmd.text.upper())

    async with running(redis_url, "slow", slow) as client:
        reply = asyncio.create_task(client.request("slow.say", Echo(text="bye"), Echoed, timeout=10))
        await asyncio.wait_for(started.wait(), 10)
        [(server, consumer)] = servers
        await server.stop()  # while the command sleeps: returns once it is answered and acked
        redis = create_redis(consumer.settings)
        try:
            pending = await redis.xpending(consumer.settings.name("slow.say"), "slow")
        finally:
            await redis.aclose()
        assert pending["pending"] == 0
        assert await reply == Echoed(text="BYE")


async def test_an_undecodable_entry_holds_up_none_of_the_commands_read_with_it(redis_url: str) -> None:
    servers: list[Consumer] = []

    def echo(server: BuswayBroker, consumer: Consumer) -> None:
        servers.append(consumer)
        echo_service(server, consumer)

    async with running(redis_url, "echo", echo) as client:
        [consumer] = servers
        redis = create_redis(consumer.settings)
        stream = consumer.settings.name("echo.say")
        try:
            await redis.xadd(stream, {"not-data": "x"})
            await redis.xadd(stream, {"__data__": b"\xff\xfe"})
            replies = await asyncio.gather(*(client.request("echo.say", Echo(text=t), Echoed) for t in "ab"))
            assert [r.text for r in replies] == ["A", "B"]
            # The junk was refused and acked with the rest, not left for the claimer.
            pending = await redis.xpending(stream, "echo")
        finally:
            await redis.aclose()
        assert pending["pending"] == 0


async def test_a_command_still_running_after_the_grace_period_is_cancelled_and_left_to_others(
    redis_url: str,
) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    servers: list[tuple[BuswayBroker, Consumer]] = []

    def stuck(server: BuswayBroker, consumer: Consumer) -> None:
        servers.append((server, consumer))

        @consumer.command(server, "stuck.say", allow={"client"})
        async def say(cmd: Echo) -> Echoed:
            started.set()
            await asyncio.sleep(2)
            finished.set()
            return Echoed(text=cmd.text)

    async with running(redis_url, "stuck", stuck, shutdown_grace=0.3) as client:
        reply = asyncio.create_task(client.request("stuck.say", Echo(text="x"), Echoed, timeout=5))
        await asyncio.wait_for(started.wait(), 10)
        [(server, consumer)] = servers
        await server.stop()
        redis = create_redis(consumer.settings)
        try:
            # Not half-done in this instance while another takes it over.
            assert await consumer.release(redis) == 1
        finally:
            await redis.aclose()
        assert not finished.is_set()
        with pytest.raises(ReplyError) as caught:
            await reply
    assert caught.value.reply.code == ErrorCode.UNAVAILABLE
    assert not finished.is_set()


async def test_a_stop_starts_none_of_the_entries_waiting_for_a_slot(redis_url: str) -> None:
    ran: list[str] = []
    started = asyncio.Event()
    servers: list[tuple[BuswayBroker, Consumer]] = []

    def one_at_a_time(server: BuswayBroker, consumer: Consumer) -> None:
        servers.append((server, consumer))

        @consumer.command(server, "queue.say", allow={"client"})
        async def say(cmd: Echo) -> Echoed:
            ran.append(cmd.text)
            started.set()
            await asyncio.sleep(0.3)
            return Echoed(text=cmd.text)

    async with running(redis_url, "queue", one_at_a_time, max_workers=1, max_records=5) as client:
        [(server, consumer)] = servers
        for text in "abcde":
            await client.send("queue.say", Echo(text=text))
        await asyncio.wait_for(started.wait(), 10)
        await server.stop()
        redis = create_redis(consumer.settings)
        stream = consumer.settings.name("queue.say")
        try:
            released = await consumer.release(redis)
            [group] = await redis.xinfo_groups(stream)
            unread = await redis.xrange(stream, min=f"({group['last-delivered-id'].decode()}", max="+") or []
        finally:
            await redis.aclose()
    assert ran == ["a"]
    # The others were left for another instance: read and released at once, or never read.
    assert released >= 1
    assert released + len(unread) == 4


def test_a_command_handler_must_take_a_model_first() -> None:
    settings = BusSettings(prefix="test-rpc-shape:")
    consumer = Consumer(settings, "shape", "shape-1")
    server = create_broker(settings, "shape", consumer)

    async def untyped(cmd: dict[str, Any]) -> Echoed:
        return Echoed(text=str(cmd))

    with pytest.raises(TypeError, match="untyped"):
        consumer.command(server, "shape.say")(untyped)
