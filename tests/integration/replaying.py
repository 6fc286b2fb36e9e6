"""Shared by the replay and inspection tests: the CLI on a prefix, event entries, a subscriber."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis
from typer.testing import CliRunner, Result

from bus import wire
from bus.broker import BusMessage, Consumer, create_broker, create_redis
from bus.cli import app
from bus.settings import BusSettings
from db.eventlog import canonical_json
from tests.harness import signed, signer_as

runner = CliRunner()


async def busway(
    settings: BusSettings, *args: str, env: Mapping[str, str] | None = None, input_text: str | None = None
) -> Result:
    """``busway <args>`` on ``settings``' Redis and prefix, in a thread so this loop's services keep running."""
    full_env = {"REDIS_URL": settings.redis_url, "BUS_PREFIX": settings.prefix, **(env or {})}
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env=full_env, input=input_text))


def message(kind: str = "UserLoggedIn", *, correlation_id: str | None = None, **payload: Any) -> dict[str, Any]:
    """A busway envelope as it travels in ``__data__``."""
    return {
        "id": uuid.uuid4().hex,
        "type": kind,
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": correlation_id or uuid.uuid4().hex,
        "producer": "auth",  # events.auth's producer: its subscribers accept only what auth signed
        "payload": payload,
    }


def exported(envelope: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` as a service's event log export holds it: compact payload, signed by its producer."""
    headers = {key: value for key, value in envelope.items() if key not in {"headers", "payload"}}
    body = canonical_json(envelope.get("payload"))
    signed_bytes = wire.encode(headers, body, signer=signer_as(str(envelope["producer"])))
    message: dict[str, Any] = json.loads(signed_bytes)
    return message


def data(envelope: dict[str, Any]) -> bytes:
    """The ``__data__`` bytes of an envelope, signed by its producer (busway refuses unsigned ones)."""
    return signed(envelope)


def text(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def raw_entries(redis: Redis, name: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """(entry id, fields) of every entry of stream ``name``."""
    found = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(name) or [])
    return [(text(entry_id), fields) for entry_id, fields in found]


async def entries(redis: Redis, name: str) -> list[tuple[str, bytes]]:
    """(entry id, __data__) of every entry of stream ``name``."""
    return [(entry_id, fields[b"__data__"]) for entry_id, fields in await raw_entries(redis, name)]


@dataclass
class Seen:
    """What a test subscriber handled: message ids, in order."""

    ids: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)


@asynccontextmanager
async def subscriber(
    settings: BusSettings,
    group: str,
    base: str,
    *,
    fail: Callable[[BusMessage], bool] = lambda _: False,
) -> AsyncIterator[Seen]:
    """A consumer group on ``base`` built with ``Consumer.events``, recording what it handles.

    ``fail``: the handler raises for the messages it picks (left pending, then dead-lettered).
    """
    seen = Seen()
    consumer = Consumer(settings, group, f"{group}-1")
    broker = create_broker(settings, group, consumer)

    @consumer.events(broker, base)
    async def handle(msg: BusMessage) -> None:
        if fail(msg):
            raise RuntimeError(f"{group} refuses {msg.message_id}")
        seen.ids.append(msg.message_id)
        raw = msg.raw_message if isinstance(msg.raw_message, dict) else {}
        seen.streams.append(str(raw.get("channel", "")))

    redis = create_redis(settings)
    await consumer.ensure_groups(redis)
    await broker.start()
    try:
        yield seen
    finally:
        await broker.stop()
        await redis.aclose()


@asynccontextmanager
async def fresh_bus(redis_url: str, **options: Any) -> AsyncIterator[tuple[BusSettings, Redis]]:
    """Bus settings on a prefix of their own and a raw client; every key under it goes afterwards."""
    settings = BusSettings(
        redis_url=redis_url, prefix=f"test-ops-{uuid.uuid4().hex[:10]}:", polling_interval_ms=100, **options
    )
    redis = Redis.from_url(redis_url)
    try:
        yield settings, redis
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{settings.prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
