"""A handler slower than BUS_CLAIM_IDLE_MS: its own process's claimer never runs the entry a second time."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bus.broker import BusMessage, BuswayBroker, Consumer, create_broker, create_redis
from bus.rpc import BusClient
from bus.settings import BusSettings
from schemas.base import Contract
from tests.harness import eventually
from tests.integration.replaying import fresh_bus

pytestmark = pytest.mark.integration

SLOW = 0.8
"""Seconds a handler takes: several claim periods (the idle time is 100 ms)."""


class Work(Contract):
    text: str


class Done(Contract):
    text: str
    runs: int


@asynccontextmanager
async def started(settings: BusSettings, consumer: Consumer, broker: BuswayBroker) -> AsyncIterator[None]:
    """``broker`` running, its groups made first."""
    redis = create_redis(settings)
    await consumer.ensure_groups(redis)
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()
        await redis.aclose()


async def pending(settings: BusSettings, stream: str, group: str) -> int:
    """Entries of ``stream`` that ``group`` has read and not acked."""
    redis = create_redis(settings)
    try:
        summary = await redis.xpending(settings.name(stream), group)
        return int(summary["pending"])
    finally:
        await redis.aclose()


async def publish_event(settings: BusSettings) -> None:
    """One event on ``events.client``, published by the ``client`` service."""
    publisher = create_broker(settings, "client", Consumer(settings, "client", "client-1"))
    await publisher.connect()
    try:
        await publisher.publish(Work(text="e"), stream=settings.name("events.client"))
    finally:
        await publisher.stop()


def acked(settings: BusSettings, runs: list[str], count: int) -> Callable[[], Awaitable[bool]]:
    """A check: the watcher's handler ran ``count`` times and nothing is pending."""

    async def check() -> bool:
        return len(runs) == count and await pending(settings, "events.client", "watcher") == 0

    return check


@pytest.mark.parametrize("max_workers", [16, 1])
async def test_a_slow_command_is_handled_once_and_answered_once(redis_url: str, max_workers: int) -> None:
    """With one worker, two of the three wait for a slot longer than the idle time: still in hand."""
    async with fresh_bus(redis_url, claim_idle_ms=100, max_workers=max_workers) as (settings, _):
        runs: list[str] = []
        consumer = Consumer(settings, "slow", "slow-1")
        broker = create_broker(settings, "slow", consumer)

        @consumer.command(broker, "slow.work", allow={"client"})
        async def work(cmd: Work) -> Done:
            runs.append(cmd.text)
            await asyncio.sleep(SLOW)
            return Done(text=cmd.text, runs=len(runs))

        client = BusClient(settings, "client-1", producer="client")
        async with started(settings, consumer, broker):
            await client.start()
            try:
                replies = await asyncio.gather(
                    *(client.request("slow.work", Work(text=f"w{i}"), Done, timeout=10) for i in range(3))
                )
            finally:
                await client.stop()
            # Claim periods pass after the replies too: nothing left is handed out again.
            await asyncio.sleep(0.5)
            assert await pending(settings, "slow.work", "slow") == 0

        assert sorted(runs) == ["w0", "w1", "w2"]
        assert sorted(reply.text for reply in replies) == ["w0", "w1", "w2"]


async def test_a_slow_event_is_handled_once_and_acked(redis_url: str) -> None:
    async with fresh_bus(redis_url, claim_idle_ms=100) as (settings, redis):
        runs: list[str] = []
        consumer = Consumer(settings, "watcher", "watcher-1")
        broker = create_broker(settings, "watcher", consumer)

        @consumer.events(broker, "events.client", allow={"client"})
        async def seen(msg: BusMessage) -> None:
            runs.append(msg.message_id)
            await asyncio.sleep(SLOW)

        async with started(settings, consumer, broker):
            await publish_event(settings)

            await eventually(acked(settings, runs, 1), timeout=5, what="the event handled and acked")
            await asyncio.sleep(0.5)  # more claim periods: still one run

        assert len(runs) == 1
        assert await pending(settings, "events.client", "watcher") == 0
        assert await redis.xlen(settings.name("dlq.events.client")) == 0


async def test_a_slow_event_that_fails_is_tried_again_not_dead_lettered(redis_url: str) -> None:
    """The claims skipped while it ran are not deliveries: BUS_MAX_DELIVERIES counts real tries."""
    async with fresh_bus(redis_url, claim_idle_ms=100, max_deliveries=2) as (settings, redis):
        runs: list[str] = []
        consumer = Consumer(settings, "watcher", "watcher-1")
        broker = create_broker(settings, "watcher", consumer)

        @consumer.events(broker, "events.client", allow={"client"})
        async def seen(msg: BusMessage) -> None:
            runs.append(msg.message_id)
            if len(runs) == 1:
                await asyncio.sleep(SLOW)  # about eight claims skipped meanwhile
                raise RuntimeError("the first try fails")

        async with started(settings, consumer, broker):
            await publish_event(settings)
            await eventually(acked(settings, runs, 2), timeout=5, what="the event tried again and acked")

        assert len(runs) == 2
        assert await pending(settings, "events.client", "watcher") == 0
        assert await redis.xlen(settings.name("dlq.events.client")) == 0
