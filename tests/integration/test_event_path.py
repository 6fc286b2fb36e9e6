"""Events reach their handler past FastStream's per-message pipeline when the handler takes the
message alone, through the pipeline otherwise; either way handled once and acked."""

import asyncio
from typing import Any

import pytest

from bus import wire
from bus.broker import BusMessage, BuswayBroker, Consumer, create_broker
from bus.metrics import HandlerMetrics
from bus.settings import BusSettings
from schemas.envelope import MESSAGE_ID, PRODUCER, TYPE
from tests.harness import eventually
from tests.integration.replaying import fresh_bus
from tests.integration.test_claims import Work, acked, pending, publish_event, started
from tests.integration.test_rpc import SKIP, commands_in, recorded_writes

pytestmark = pytest.mark.integration


def reads_directly(broker: Any) -> list[bool]:
    """For each subscriber of ``broker`` that reads new entries: whether the bus handles them itself."""
    return [
        "read_events_directly" in subscriber.consume_one.__qualname__
        for subscriber in broker.subscribers
        if not subscriber.stream_sub.min_idle_time  # the claimers keep FastStream's pipeline
    ]


@pytest.mark.parametrize("direct", [True, False])
async def test_an_event_is_handled_once_and_acked_on_either_path(redis_url: str, direct: bool) -> None:
    async with fresh_bus(redis_url, claim_idle_ms=100) as (settings, redis):
        runs: list[str] = []
        consumer = Consumer(settings, "watcher", "watcher-1")
        broker = create_broker(settings, "watcher", consumer)
        subscribe = consumer.events(broker, "events.client", allow={"client"})
        if direct:

            @subscribe
            async def seen(msg: BusMessage) -> None:
                runs.append(msg.message_id)

        else:

            @subscribe
            async def seen_with_body(body: dict[str, Any], msg: BusMessage) -> None:
                assert body == {"text": "e"}  # decoded by FastStream
                runs.append(msg.message_id)

        # The event stream and its replay stream: read by the bus itself, or by FastStream.
        assert reads_directly(broker) == [direct, direct]
        with recorded_writes() as writes:
            async with started(settings, consumer, broker):
                # Either way the reads are the bus's own (bus.batches.read_on), one connection per stream.
                names = [c["name"] for c in await redis.client_list() if c["name"].startswith("watcher:read:")]
                assert sorted(n.rpartition(":")[0].removeprefix("watcher:read:") for n in names) == sorted(
                    consumer.event_streams
                )
                await publish_event(settings)
                await eventually(acked(settings, runs, 1), timeout=5, what="the event handled and acked")
                await asyncio.sleep(0.3)  # claim periods: nothing is handed out again

        assert len(runs) == 1
        acks = [commands_in(write) for _, write in writes if b"XACK" in write]
        # The bus's own path acks with no round trip of its own: ack (no reply wanted), then
        # the next read, in one write on the reader's connection. FastStream's acks through redis-py.
        assert acks == ([[SKIP, b"XACK", b"XREADGROUP"]] if direct else [])
        assert await pending(settings, "events.client", "watcher") == 0
        assert await redis.xlen(settings.name("dlq.events.client")) == 0


class Unwanted(Work):
    """An event of a type the watcher does not handle."""


def watching_work(settings: BusSettings) -> tuple[Consumer, BuswayBroker, HandlerMetrics, list[str]]:
    """A watcher of ``events.client`` that takes ``Work`` events only; the types it ran, in order."""
    runs: list[str] = []
    consumer = Consumer(settings, "watcher", "watcher-1")
    metrics = HandlerMetrics(settings)
    broker = create_broker(settings, "watcher", consumer, metrics=metrics)

    @consumer.events(broker, "events.client", allow={"client"}, types=(Work,))
    async def seen(msg: BusMessage) -> None:
        runs.append(str(msg.headers.get(TYPE)))

    return consumer, broker, metrics, runs


def outcomes(metrics: HandlerMetrics, stream: str) -> dict[str, float]:
    """``busway_messages_total`` of ``stream``, by outcome."""
    return {
        sample.labels["outcome"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "busway_messages_total" and sample.labels["stream"] == stream
    }


async def test_events_of_types_the_handler_does_not_take_are_acked_unread(redis_url: str) -> None:
    async with fresh_bus(redis_url, claim_idle_ms=100) as (settings, redis):
        consumer, broker, metrics, runs = watching_work(settings)
        publisher = create_broker(settings, "client", Consumer(settings, "client", "client-1"))
        stream = settings.name("events.client")
        async with started(settings, consumer, broker):
            await publisher.connect()
            try:
                await publisher.publish(Unwanted(text="skip me"), stream=stream)
                # Not even signed: an entry of a type not taken is not read far enough to check.
                unsigned = wire.encode({MESSAGE_ID: "m-unsigned", TYPE: "Unwanted", PRODUCER: "client"}, b"{}")
                await redis.xadd(stream, {wire.DATA_FIELD: unsigned})
                await publisher.publish(Work(text="take me"), stream=stream)
            finally:
                await publisher.stop()
            await eventually(acked(settings, runs, 1), timeout=5, what="the taken event handled, all acked")
            await asyncio.sleep(0.3)  # claim periods: nothing is handed out again

        assert runs == ["Work"]
        assert await pending(settings, "events.client", "watcher") == 0
        assert await redis.xlen(settings.name("dlq.events.client")) == 0
        assert outcomes(metrics, "events.client") == {"skipped": 2.0, "ok": 1.0}


async def test_an_entry_whose_type_cannot_be_read_takes_the_whole_path(redis_url: str) -> None:
    """Not a busway message: refused there (unsigned), acked, never handed to the handler."""
    async with fresh_bus(redis_url, claim_idle_ms=100) as (settings, redis):
        consumer, broker, metrics, runs = watching_work(settings)
        async with started(settings, consumer, broker):
            await redis.xadd(settings.name("events.client"), {wire.DATA_FIELD: b"not json"})

            async def refused() -> bool:
                return outcomes(metrics, "events.client") == {"unauthenticated": 1.0} and (
                    await pending(settings, "events.client", "watcher") == 0
                )

            await eventually(refused, timeout=5, what="the entry refused by the whole path, and acked")
        assert runs == []
