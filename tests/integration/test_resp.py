"""The hot-path Redis connection (bus/resp.py) against a real Redis."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.resp import RespConnection, RespSubscription, Script
from tests.integration.silent_redis import silent_server

pytestmark = pytest.mark.integration


@pytest.fixture
async def keys(redis_url: str) -> AsyncIterator[str]:
    """A fresh key prefix, deleted afterwards."""
    prefix = f"test-resp-{uuid.uuid4().hex[:8]}:"
    yield prefix
    redis = Redis.from_url(redis_url)
    found = [key async for key in redis.scan_iter(match=f"{prefix}*")]
    if found:
        await redis.delete(*found)
    await redis.aclose()


async def test_concurrent_callers_each_get_their_own_replies(redis_url: str, keys: str) -> None:
    connection = RespConnection(redis_url)
    try:
        # Many callers in one loop turn share one write; each must get its own answers back.
        answers = await asyncio.gather(
            *(connection.execute(("ECHO", f"caller {i}"), ("INCR", f"{keys}n")) for i in range(300))
        )
    finally:
        await connection.stop()
    assert [echo for echo, _ in answers] == [f"caller {i}".encode() for i in range(300)]
    assert sorted(count for _, count in answers) == list(range(1, 301))


async def test_an_error_reply_takes_its_commands_place_and_spares_the_others(redis_url: str, keys: str) -> None:
    connection = RespConnection(redis_url)
    try:
        await connection.execute(("SET", f"{keys}text", "not a stream"))
        added, wrong, echoed = await connection.execute(
            ("XADD", f"{keys}stream", "*", "f", "v"), ("XADD", f"{keys}text", "*", "f", "v"), ("ECHO", "after")
        )
    finally:
        await connection.stop()
    assert isinstance(added, bytes)
    assert isinstance(wrong, ResponseError)
    assert "WRONGTYPE" in str(wrong)
    assert echoed == b"after"


async def test_the_database_in_the_url_is_selected(redis_url: str, keys: str) -> None:
    connection = RespConnection(f"{redis_url.rstrip('/')}/5")
    plain = Redis.from_url(f"{redis_url.rstrip('/')}/5")
    try:
        await connection.execute(("SET", f"{keys}db", "five"))
        assert await plain.get(f"{keys}db") == b"five"
    finally:
        await plain.delete(f"{keys}db")
        await plain.aclose()
        await connection.stop()


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(redis_url: str) -> None:
    connection = RespConnection(redis_url)
    admin = Redis.from_url(redis_url)
    name = f"test-resp-{uuid.uuid4().hex[:8]}"
    try:
        await connection.execute(("CLIENT", "SETNAME", name))
        blocked = asyncio.ensure_future(connection.execute(("BLPOP", f"{name}:never", 10)))
        await asyncio.sleep(0.1)
        [client] = [c for c in await admin.client_list() if c["name"] == name]
        await admin.client_kill_filter(_id=client["id"])
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await connection.execute(("ECHO", "again")) == [b"again"]
    finally:
        await admin.aclose()
        await connection.stop()


async def test_a_silent_server_times_out_and_the_connection_is_replaced() -> None:
    async with silent_server() as silent:
        connection = RespConnection(f"redis://127.0.0.1:{silent.port}", timeout=0.2)
        try:
            for _ in range(2):
                with pytest.raises(RedisTimeoutError):
                    await connection.execute(("PING",))
            # A reply owed on a dead connection could be handed to the next caller: each
            # timeout closed it and the next call opened another.
            assert len(silent.accepted) == 2
        finally:
            await connection.stop()


async def test_a_stall_is_noticed_even_when_every_caller_gives_up_first() -> None:
    # The gateway's callers have deadlines shorter than the connection's: they are
    # cancelled, never time out here. The connection must still see that Redis went quiet.
    async with silent_server() as silent:
        connection = RespConnection(f"redis://127.0.0.1:{silent.port}", timeout=0.3)
        try:
            for _ in range(5):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await connection.execute(("PING",))
            await asyncio.sleep(0.4)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await connection.execute(("PING",))
            assert len(silent.accepted) == 2  # the stalled connection was dropped and another opened
        finally:
            await connection.stop()


async def test_a_handshake_that_times_out_leaves_no_socket_behind() -> None:
    closed = asyncio.Event()

    async def never_answer_auth(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass  # AUTH arrives and is never answered
        closed.set()
        writer.close()

    server = await asyncio.start_server(never_answer_auth, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = RespConnection(f"redis://user:secret@127.0.0.1:{port}", connect_timeout=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await connection.execute(("PING",))
        async with asyncio.timeout(2):
            await closed.wait()
    finally:
        await connection.stop()
        server.close()
        await server.wait_closed()


async def test_no_commands_get_no_replies_and_spoil_nothing(redis_url: str) -> None:
    connection = RespConnection(redis_url)
    try:
        assert await connection.execute() == []
        assert await connection.execute(("ECHO", "still in order")) == [b"still in order"]
    finally:
        await connection.stop()


async def test_a_script_is_sent_whole_once_then_run_by_its_sha(redis_url: str, keys: str) -> None:
    script = Script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    connection = RespConnection(redis_url)
    admin = Redis.from_url(redis_url)
    try:
        assert await admin.script_exists(script.sha) == [False]
        assert await script(connection, [f"{keys}counter"], [5]) == 5  # NOSCRIPT, then EVAL
        assert await admin.script_exists(script.sha) == [True]
        assert await script(connection, [f"{keys}counter"], [2]) == 7  # EVALSHA
        with pytest.raises(ResponseError):
            await Script("return redis.call('NOSUCHCOMMAND')")(connection, [], [])
    finally:
        await admin.aclose()
        await connection.stop()


async def test_a_connection_is_named_for_client_list(redis_url: str) -> None:
    name = f"test resp {uuid.uuid4().hex[:8]}"  # a space is not allowed: it becomes a dash
    connection = RespConnection(redis_url, client_name=name)
    admin = Redis.from_url(redis_url)
    try:
        await connection.execute(("PING",))
        assert name.replace(" ", "-") in {client["name"] for client in await admin.client_list()}
    finally:
        await admin.aclose()
        await connection.stop()


async def test_nothing_listening_is_a_connection_error() -> None:
    connection = RespConnection("redis://127.0.0.1:1", connect_timeout=1)
    with pytest.raises(RedisConnectionError):
        await connection.execute(("PING",))
    await connection.stop()


async def test_a_subscription_delivers_and_resubscribes_after_a_loss(redis_url: str) -> None:
    channel = f"test-resp-{uuid.uuid4().hex[:8]}"
    received: list[bytes] = []
    losses: list[Exception] = []
    name = f"test-resp-{uuid.uuid4().hex[:8]}"
    subscription = RespSubscription(redis_url, channel, received.append, client_name=name)
    subscription.on_loss = losses.append
    admin = Redis.from_url(redis_url)
    try:
        await subscription.start()
        await admin.publish(channel, b"first")
        await _until(lambda: received == [b"first"])
        # Only our own connection: other clients of this Redis (a CI run beside) are not ours to cut.
        [ours] = [client for client in await admin.client_list(_type="pubsub") if client["name"] == name]
        await admin.client_kill_filter(_id=ours["id"])
        await _until(lambda: bool(losses))

        async def delivered() -> bool:
            await admin.publish(channel, b"second")
            await asyncio.sleep(0.1)
            return b"second" in received

        for _ in range(50):
            if await delivered():
                break
        assert b"second" in received
    finally:
        await subscription.stop()
        await admin.aclose()


async def test_a_message_its_handler_fails_on_costs_no_other_message(redis_url: str) -> None:
    channel = f"test-resp-{uuid.uuid4().hex[:8]}"
    received: list[bytes] = []

    def handle(data: bytes) -> None:
        if data == b"boom":
            raise ValueError(data)
        received.append(data)

    subscription = RespSubscription(redis_url, channel, handle)
    admin = Redis.from_url(redis_url)
    try:
        await subscription.start()
        async with admin.pipeline(transaction=False) as pipe:  # one read holds all three
            for data in (b"one", b"boom", b"three"):
                pipe.publish(channel, data)
            await pipe.execute()
        await _until(lambda: received == [b"one", b"three"])
    finally:
        await subscription.stop()
        await admin.aclose()


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail("the condition did not hold in time")


async def test_a_stop_while_the_connection_opens_leaves_no_connection_behind(redis_url: str) -> None:
    name = f"test-stop-opening-{uuid.uuid4().hex[:8]}"
    connection = RespConnection(redis_url, client_name=name)
    sent = connection.submit(("PING",))  # not connected yet: it opens in the background
    await connection.stop()
    with pytest.raises(RedisConnectionError):
        await sent
    redis = Redis.from_url(redis_url)
    try:
        clients = await redis.client_list()
    finally:
        await redis.aclose()
    assert [c for c in clients if c["name"] == name] == []


async def test_what_a_loop_turn_queued_is_written_before_the_connection_closes(redis_url: str, keys: str) -> None:
    """A command queued without waiting for its reply, then a stop in the same turn: it still goes out."""
    connection = RespConnection(redis_url)
    await connection.execute(("PING",))  # open
    sent = connection.submit(("SET", f"{keys}last", "1"))
    await connection.stop()
    with pytest.raises(RedisConnectionError):
        await sent  # the reply never came: the connection closed first
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.get(f"{keys}last") == b"1"
    finally:
        await redis.aclose()
