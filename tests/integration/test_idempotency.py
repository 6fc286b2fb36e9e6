"""The Redis inbox on real Redis: once per event id, again after a failure, never two at a time."""

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bus.idempotency import EventInProgress, RedisInbox
from bus.settings import BusSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def inbox(redis_url: str) -> AsyncIterator[RedisInbox]:
    settings = BusSettings(redis_url=redis_url, prefix=f"test-{uuid.uuid4().hex[:10]}:")
    redis = Redis.from_url(redis_url)
    try:
        yield RedisInbox(redis, settings, "mailer", ttl=60, lease=30)
    finally:
        async for key in redis.scan_iter(match=f"{settings.prefix}*"):
            await redis.delete(key)
        await redis.aclose()


async def test_an_event_is_handled_once(inbox: RedisInbox) -> None:
    async with inbox.once("e1") as first:
        assert first
    async with inbox.once("e1") as again:
        assert not again
    assert await inbox.handled("e1")
    assert inbox.key("e1").endswith("handled.mailer.e1")


async def fail_handling(inbox: RedisInbox, event_id: str) -> None:
    async with inbox.once(event_id) as first:
        assert first
        raise RuntimeError("SMTP server away")


async def test_a_failed_event_is_handled_again(inbox: RedisInbox) -> None:
    with pytest.raises(RuntimeError):
        await fail_handling(inbox, "e1")
    assert not await inbox.handled("e1")
    async with inbox.once("e1") as retry:
        assert retry


async def test_an_event_in_progress_elsewhere_is_left_for_later(inbox: RedisInbox) -> None:
    async with inbox.once("e1") as first:
        assert first
        with pytest.raises(EventInProgress):
            async with inbox.once("e1"):
                raise AssertionError("two consumers at once")
    async with inbox.once("e1") as later:
        assert not later


async def test_forget_makes_every_event_new_again(inbox: RedisInbox) -> None:
    for event_id in ("e1", "e2"):
        async with inbox.once(event_id):
            pass
    assert await inbox.forget() == 2
    async with inbox.once("e1") as first:
        assert first
