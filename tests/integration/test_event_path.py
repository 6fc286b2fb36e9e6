"""Events reach their handler past FastStream's per-message pipeline when the handler takes the
message alone, through the pipeline otherwise; either way handled once and acked."""

import asyncio
from typing import Any

import pytest

from bus.broker import BusMessage, Consumer, create_broker
from tests.harness import eventually
from tests.integration.replaying import fresh_bus
from tests.integration.test_claims import acked, pending, publish_event, started
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
